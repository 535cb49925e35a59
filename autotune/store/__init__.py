"""Store: the SQL database every measurement lives in, and the queries over it.

Takes records, jobs and artifacts from the search and compile; gives them back to MetaSchedule
(``metaschedule.SqlDatabase``), to compile (through one ``selection.Selection``) and to users
(``history``). ``engine`` opens any SQLAlchemy URL (SQLite by default, PostgreSQL for teams);
``schema`` and ``migrations`` define the rows; ``jobs`` writes the job bookkeeping. Storage only:
nothing here decides what to tune.
"""
