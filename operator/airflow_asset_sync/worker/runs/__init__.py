"""DAG-run and task completions of the source as asset events (`spec.dagRuns`).

`ids` turns one completion into a `SourceEvent` (its negative, stable id; its URI from the
selector's template; the run in its ``extra``), `cursor` reads the new ones from the source
with the events' checkpoint arithmetic, and `poller` publishes them beside the events poller.
"""
