"""The general pipeline stages (validate, prepare, evaluate, gate, register, sweep): no task-kind branches."""
