"""The preoperative plan: files, coordinate systems, signatures."""
