"""What the app does, for the API and the pages alike: the only layer with logic.

Each function takes the store session, the acting user and plain values, checks access,
does the work and records it in the project's audit log; it raises
:class:`custseg.errors.CustsegError` subclasses, which the edges turn into their answers.
"""
