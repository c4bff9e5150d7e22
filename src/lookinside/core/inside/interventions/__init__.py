"""Change the inside and watch the answer: ablation, activation patching and steering.

`requests.py` and `records.py` are plain data (no torch); `hooks.py` installs the edits and always
removes them; `ablate.py`, `patch.py` and `steer.py` each answer one request with one record.
"""
