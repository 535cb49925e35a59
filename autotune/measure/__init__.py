"""Measure: build and time candidates, isolated from the driver.

Takes scheduled tasks and built artifacts; gives MetaSchedule builder/runner results
(``outcome.Outcome`` once converted). ``workers`` keeps warm processes that a crashing candidate
cannot take down, ``worker_jobs`` is all they may run, ``measurer`` is the builder and runner on
them, ``rpc`` times on remote servers, ``profile`` times every kernel inside a running model.
"""
