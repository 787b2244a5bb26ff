"""Helpers the tests share that are neither fixtures nor tests: a case-folding FUSE file system, for one."""
