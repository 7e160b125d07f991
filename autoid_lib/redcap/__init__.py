"""The one place that talks to REDCap: every request the kit sends, and what it keeps of them.

- ``gateway``      the only module that imports PyCap: one method per question, answers checked
- ``http_guard``   the transport: no redirects, a total deadline and a size cap on every answer
- ``pacing``       the request ceiling (``max_requests_per_minute``)
- ``read_check``   every chunked read complete or failed (pure checks)
- ``table_merge``  the local copy's rules: which read a run makes, and the merge (pure)
- ``table_cache``  the local copy's SQLite file
- ``table_read``   a run's reads of AutoID and Projects through the local copy
- ``copy_mark``    the copy's mark: a REDCap restored from a backup is caught (pure)
- ``clock``        REDCap's clock, confirmed with a record the kit wrote, or measured
- ``lease``        the lease's REDCap side: take, settle, check, release (rules in
                   ``autoid_lib.lease``)
- ``second_look``  before the transfers: are this run's patients still its own? (pure)

Nothing outside this package sends a request to REDCap; the layer test keeps it so.
"""
