"""The run surface: `lookahead run` and `lookahead replay` (cli.py), a run's steps (runner.py), request
files in and result lines out (requests_io.py, results_file.py), tasks that shape requests (tasks.py),
document files (documents.py) and the summary (report.py).

>>> from lookahead.run.requests_io import parse_line
>>> parse_line('{"id": "a", "prompt": "Hi"}', 1).id
'a'
"""
