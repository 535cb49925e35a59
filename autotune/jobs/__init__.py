"""Jobs: the verbs users run, from an ONNX file to records and artifacts.

Takes a model path and options; gives typed results. ``prepare`` imports, fuses and splits a
model into tasks; ``tune`` opens or resumes a job, measures fixed schedules, searches within the
budget and re-times the finalists (``confirm``); ``compile`` builds the chosen records into a
validated artifact; ``study`` runs an Optuna study over graph-level knobs on top of both.
"""
