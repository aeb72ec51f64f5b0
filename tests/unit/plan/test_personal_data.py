"""Personal data in plans, by allowlist: every key at every depth of plan.json and of the
markups file is in the schema, names and texts hold no dates, phone/ID numbers or e-mail
addresses, and the folder holds only the files its manifest names."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.errors import PlanError
from edge.plan.load import read_plan
from edge.plan.schema import personal_data
from support.synthetic_face import Doc, edit_json


def _cp(doc: Doc) -> Doc:
    return doc["markups"][0]["controlPoints"][0]


# The cases, and more of the same kind: (file, change, what the refusal names).
REFUSED: dict[str, tuple[str, Callable[[Doc], object], str]] = {
    "PatientsName": ("plan.json", lambda d: d.update(PatientsName="Doe^John"), "'PatientsName'"),
    "PatientSex": ("plan.json", lambda d: d.update(PatientSex="M"), "'PatientSex'"),
    "OtherPatientIDs": (
        "plan.json",
        lambda d: d.update(OtherPatientIDs="A1"),
        "'OtherPatientIDs'",
    ),
    "telephone in a target": (
        "plan.json",
        lambda d: d["targets"][0].update(telephone="x"),
        r"'targets\[0\]\.telephone'",
    ),
    "birthday in a target": (
        "plan.json",
        lambda d: d["targets"][0].update(birthday="x"),
        r"'targets\[0\]\.birthday'",
    ),
    "nhs_number in a target": (
        "plan.json",
        lambda d: d["targets"][0].update(nhs_number="x"),
        r"'targets\[0\]\.nhs_number'",
    ),
    "postcode in a target": (
        "plan.json",
        lambda d: d["targets"][0].update(postcode="x"),
        r"'targets\[0\]\.postcode'",
    ),
    "key in a cut plane": (
        "plan.json",
        lambda d: d["cut_planes"][0].update(operator="x"),
        r"'cut_planes\[0\]\.operator'",
    ),
    "object where a point is": (
        "plan.json",
        lambda d: d["targets"][0].update(position={"PatientName": "x"}),
        r"'targets\[0\]\.position' must not hold an object",
    ),
    "PatientName in the markups file": (
        "landmarks.mrk.json",
        lambda d: d.update(PatientName="Doe^John"),
        "markups landmarks.mrk.json: unknown field 'PatientName'",
    ),
    "PatientName in a markup": (
        "landmarks.mrk.json",
        lambda d: d["markups"][0].update(PatientName="x"),
        r"'markups\[0\]\.PatientName'",
    ),
    "PatientName in a control point": (
        "landmarks.mrk.json",
        lambda d: _cp(d).update(PatientName="x"),
        r"'markups\[0\]\.controlPoints\[0\]\.PatientName'",
    ),
    "PatientName in the display settings": (
        "landmarks.mrk.json",
        lambda d: d["markups"][0].update(display={"PatientName": "x"}),
        r"'markups\[0\]\.display\.PatientName'",
    ),
    "target named with a birth date": (
        "plan.json",
        lambda d: d["targets"][0].update(name="Doe John 1970-01-01"),
        r"'targets\[0\]\.name' looks like it holds personal data \(a date\)",
    ),
    "date in the description": (
        "plan.json",
        lambda d: d.update(description="seen on 01/02/1970"),
        r"'description' looks like it holds personal data \(a date\)",
    ),
    "phone in a trajectory name": (
        "plan.json",
        lambda d: d["trajectories"][0].update(name="call +44 20 7946 0958"),
        r"'trajectories\[0\]\.name' .*\(a phone number\)",
    ),
    "NHS number in a structure file name": (
        "plan.json",
        lambda d: d.update(skin="943 476 5919.stl"),
        r"'skin' .*ID or phone number",
    ),
    "date in the case id": (
        "plan.json",
        lambda d: d.update(case_id="CASE-19700101"),
        r"'case_id' .*\(a date\)",
    ),
    "e-mail in a landmark description": (
        "landmarks.mrk.json",
        lambda d: _cp(d).update(description="ask jdoe@example.org"),
        r"'markups\[0\]\.controlPoints\[0\]\.description' .*e-mail",
    ),
    "date in a markup name": (
        "landmarks.mrk.json",
        lambda d: d["markups"][0].update(name="F 1 Jan 1970"),
        r"'markups\[0\]\.name' .*\(a date\)",
    ),
    "a curve instead of a point list": (
        "landmarks.mrk.json",
        lambda d: d["markups"][0].update(type="Curve"),
        "is not a point list",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_personal_data_and_unknown_keys_are_refused(plan_dir: Path, case: str) -> None:
    file, change, needle = REFUSED[case]
    edit_json(plan_dir / file, change)
    with pytest.raises(PlanError, match=needle) as info:
        read_plan(plan_dir)
    message = str(info.value)
    assert info.value.fix and "\n" not in message
    for value in ("Doe", "1970", "7946", "5919", "jdoe"):  # the field is named, not its value
        assert value not in message


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01",
        "1970/1/1",
        "01/02/1970",
        "1.2.70",
        "1 Jan 1970",
        "01-JAN-1970",
        "1st of January 1970",
        "January 1, 1970",
        "Jan 1 1970",
        "19700101",
        "+44 20 7946 0958",
        "0044 20 7946 0958",
        "(555) 123-4567",
        "555.123.4567",
        "555-123-4567",
        "943 476 5919",
        "9434765919",
        "123-45-6789",
        "MRN 12345678",
        "john.doe@example.org",
    ],
)
def test_personal_data_patterns(text: str) -> None:
    assert personal_data(text) is not None
    assert personal_data(f"target {text} left") is not None


@pytest.mark.parametrize(
    "text",
    [
        "pituitary",
        "frontal_sinus",
        "maxillary_sinus_right",
        "T1",
        "biopsy 2",
        "approach 30 deg from the midline, 12.5 mm deep",
        "PHANTOM-0001",
        "SYNTH-0001",
        "vtkMRMLScalarVolumeNode1",
        "%N-%d",
        "Sphere3D",
        "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
        "Resources/Schema/markups-schema-v1.0.3.json#",
        "mar 12",
        "levels C3-C5",
    ],
)
def test_ordinary_names_and_texts_pass(text: str) -> None:
    assert personal_data(text) is None


def test_what_3d_slicer_writes_for_a_point_list_is_accepted(plan_dir: Path) -> None:
    """Every key Slicer 5 writes in a point list's .mrk.json (markups schema v1.0.3)."""

    def as_slicer_writes(d: Doc) -> None:
        m = d["markups"][0]
        m.update(
            name="F",
            locked=False,
            fixedNumberOfControlPoints=False,
            lastUsedControlPointNumber=len(m["controlPoints"]),
            measurements=[],
            display={
                "visibility": True,
                "opacity": 1.0,
                "color": [0.4, 1.0, 1.0],
                "selectedColor": [1.0, 0.5, 0.5],
                "activeColor": [0.4, 1.0, 0.0],
                "propertiesLabelVisibility": False,
                "pointLabelsVisibility": True,
                "textScale": 3.0,
                "glyphType": "Sphere3D",
                "glyphScale": 3.0,
                "glyphSize": 5.0,
                "useGlyphScale": True,
                "sliceProjection": False,
                "sliceProjectionUseFiducialColor": True,
                "sliceProjectionOutlinedBehindSlicePlane": False,
                "sliceProjectionColor": [1.0, 1.0, 1.0],
                "sliceProjectionOpacity": 0.6,
                "lineThickness": 0.2,
                "lineColorFadingStart": 1.0,
                "lineColorFadingEnd": 10.0,
                "lineColorFadingSaturation": 1.0,
                "lineColorFadingHueOffset": 0.0,
                "handlesInteractive": False,
                "translationHandleVisibility": True,
                "rotationHandleVisibility": True,
                "scaleHandleVisibility": True,
                "interactionHandleScale": 3.0,
                "snapMode": "toVisibleSurface",
            },
        )
        _cp(d).update(associatedNodeID="vtkMRMLModelNode4", selected=True, visibility=True)

    edit_json(plan_dir / "landmarks.mrk.json", as_slicer_writes)
    plan = read_plan(plan_dir)
    assert len(plan.landmarks) == 10


@pytest.mark.parametrize("extra", ["notes.txt", "sub/readme.md", ".DS_Store"])
def test_a_file_the_manifest_does_not_name_is_refused(plan_dir: Path, extra: str) -> None:
    (plan_dir / extra).parent.mkdir(exist_ok=True)
    (plan_dir / extra).write_text("Doe John")
    needle = f"plan folder holds {re.escape(extra)}, which plan.json does not name"
    with pytest.raises(PlanError, match=needle):
        read_plan(plan_dir)


def test_the_signature_file_and_named_subfolder_files_are_allowed(
    plan_dir: Path, small_mesh
) -> None:
    (plan_dir / "plan.sig").write_text("{}")  # checked by the signature check, not here
    (plan_dir / "meshes").mkdir()
    (plan_dir / "skin.stl").rename(plan_dir / "meshes" / "skin.stl")
    edit_json(plan_dir / "plan.json", lambda d: d.update(skin="meshes/skin.stl"))
    assert len(read_plan(plan_dir).skin.faces) == len(small_mesh.faces)


def test_the_phantom_plan_passes_sign_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge phantom --plan-out` (the writer the demo plan also uses), then sign and verify."""
    from edge.cli import main
    from edge.sources.phantom.plan_out import truth_path

    folder = tmp_path / "plan"
    assert main(["phantom", "--plan-out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "landmarks.mrk.json",
        "optic_chiasm.stl",
        "plan.json",
        "skin.stl",
    ]
    assert truth_path(folder) == tmp_path / "plan.truth.json" and truth_path(folder).is_file()
    assert main(["plan", "keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["plan", "sign", str(folder), "--key", str(tmp_path / "k.key")]) == 0
    assert main(["plan", "verify", str(folder), "--pubkey", str(tmp_path / "k.pub")]) == 0
    assert "plan PHANTOM-0001: signature valid" in capsys.readouterr().out
