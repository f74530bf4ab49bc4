"""What crosses the boundary between workflows and activities: shared data, nothing else.

`activity` holds the activity names and their request/result models; `errors` the error types
workflows and retry policies recognise. Both are pure (pydantic models, enums, one exception
factory), so workflow code imports them and the sandbox passes them through by name; nothing
here may import `activities` (side effects) or `workflows` (deterministic code).
"""
