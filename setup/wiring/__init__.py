"""Plan -> apply -> remove for a trail's CloudWatch Logs delivery: no argparse, no printing.

:mod:`.models` (the trail, the target, names, tags, the exact policy documents; pure) ->
:mod:`.state` (read what exists) -> :mod:`.target` (resolve a run's target) -> :mod:`.planner`
(steps and plans, pure), with :mod:`.cis_alarms` and :mod:`.subscription` adding their steps ->
:mod:`.plans` (the whole plan of a run, its state digest and saved file) -> :mod:`.executor`
(run the steps). :mod:`.removal` builds the remove plan.
"""
