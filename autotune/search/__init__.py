"""Search: schedules for a model's tasks within a budget, every measurement committed as it comes.

Takes tasks (``frontend.tasks.Task``), a MetaSchedule database (``store.metaschedule``), a
``measure.measurer.Measurer`` and a ``budget.Budget``; gives a ``driver.SearchResult``. First the
fixed schedules nobody timed yet (``fixed``: heuristic, naive, manual), then rounds of MetaSchedule's
evolutionary search sharing one XGBoost cost model, the next task picked by ``scheduler``.
"""
