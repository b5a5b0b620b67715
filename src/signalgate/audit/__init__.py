"""The Gateway's audit trail on its way to DataStorage: durable before acknowledged.

`JournalAuditSink` (sink.py) is what the pipeline emits to; `Journal` (journal.py) makes the
events durable with group commit before the signal is answered; `Relay` (relay.py) delivers
the journal to DataStorage in order and truncates what DataStorage confirmed. Every option
lives in `settings.py`, nowhere else.
"""
