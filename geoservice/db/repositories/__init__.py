"""SQL only: functions that take a Session."""
