"""The v1 generated client stubs of the API as main had them before v2 (a frozen copy for the compatibility test)."""
