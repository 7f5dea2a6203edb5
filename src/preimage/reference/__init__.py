"""Reference implementations we measure ourselves against (VLFeat through ctypes).

Used by the tests and by ``bench/``; never by the workflow itself.
"""
