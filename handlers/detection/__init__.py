"""Detection: the CloudWatch Logs filter-pattern language (:mod:`.patterns`) and the rules written
in it (:mod:`.rules`): the built-in CIS controls (:mod:`.cis`), the detection pack (``pack.json``)
and the tamper rules (:mod:`.tamper`), assembled by :mod:`.builtin`; per-principal thresholds in
:mod:`.thresholds`. Pure: nothing here publishes or imports the sinks.
"""
