"""What the display draws, built from pose + plan (content), and its 2-D projection."""
