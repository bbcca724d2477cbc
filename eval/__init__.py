"""Evaluation: the streaming runtime, metrics, sweeps, figures, the report and the commands
`eval.reproduce` and `eval.segment_video` (DESIGN.md). Submodules are imported on use."""
