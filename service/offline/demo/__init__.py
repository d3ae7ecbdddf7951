"""``labelagent demo``: the service labeling a real stream, with nothing to set up.

It serves the API and the pages (``labelagent serve`` with one in-process worker) on its own database (default
``sqlite:///./labelagent-demo.db``), creates the project ``sms_spam`` with the shipped example policy, streams the
shipped SMS Spam Collection subset (``data/``, CC BY 4.0, see ``data/LICENSE-sms_spam.txt``) into it at a steady
rate through ``POST /projects/{p}/items``, and runs simulated reviewers (``simulated-reviewer-N``) that claim
review tasks through ``POST /projects/{p}/reviews/claim`` and submit the dataset's label through
``POST /reviews/{task}/submit`` a short delay later: the path a person's answers take. The simulation is
announced on both pages (``GET /projects/{p}/demo``), in the audit log (``demo.started``, ``demo.stopped``,
``demo.reviewer_paused``/``resumed``) and in every answer's reviewer name. A person takes over by pausing the
simulated reviewers from either page (``POST /projects/{p}/demo/reviewer``); answers given under their name are
human ground truth like any other.

The stream position is the number of the project's items, so a restarted demo continues where it stopped
(ingest is idempotent by external id: nothing is stored twice); ``--reset`` deletes the demo's SQLite file first.
"""
