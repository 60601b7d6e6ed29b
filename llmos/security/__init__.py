"""Security: signed capabilities, grants, the installation key and the tamper-evident audit log."""
