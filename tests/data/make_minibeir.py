"""A small BEIR-layout collection for training tests: real sentences, distinct topics, judged queries."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "d1": ("Rotating API keys", "API keys should be rotated every ninety days. A rotation issues a new key while the old key keeps working for a day. After the overlap the old key is revoked. Clients must be redeployed with the new key during the overlap."),
    "d2": ("Rate limiting requests", "Each client may send six hundred requests per minute. Requests above the limit are answered with status 429. The Retry-After header tells the client how long to wait. Batch calls count as a single request."),
    "d3": ("Database backups", "Databases are snapshotted every six hours. The write-ahead log is shipped continuously to object storage. This gives a recovery point objective of five minutes. Snapshots are kept for thirty-five days."),
    "d4": ("Restoring a database", "A restore creates a new instance from a snapshot and replays the log. The damaged instance is kept for inspection. Restoring one hundred gigabytes takes about forty minutes. The recovery time objective is four hours."),
    "d5": ("Incident severity levels", "A SEV1 incident means the product is down for many customers. A SEV2 incident means a major feature is degraded. A SEV3 incident is a minor problem with a workaround. The severity decides who is paged."),
    "d6": ("Incident roles", "The incident commander coordinates the response and makes decisions. The communications lead updates the status page every thirty minutes. The operations lead works on the fix. Nobody holds two roles at once."),
    "d7": ("Writing post-mortems", "A blameless post-mortem is written within five working days. It lists the timeline and the root cause. Every follow-up action has an owner and a due date. Post-mortems are reviewed in the weekly operations meeting."),
    "d8": ("Laptop security", "Company laptops use full disk encryption. The screen locks after five minutes of inactivity. Lost laptops must be reported to the security team within one hour. Remote wipe is enabled on every device."),
    "d9": ("Two-factor authentication", "Every account must enable two-factor authentication. Hardware security keys are preferred over text messages. Recovery codes are stored in the password manager. Accounts without a second factor are suspended after a week."),
    "d10": ("Expense claims", "Receipts are submitted within thirty days of the purchase. Meals on business trips are reimbursed up to sixty euros a day. Home office equipment up to five hundred euros needs only manager approval. Larger purchases go to finance."),
    "d11": ("Booking business travel", "Flights and hotels are booked through the travel portal. Economy class is the default for flights shorter than six hours. Trips outside the European Union need director approval. Bookings should be made two weeks ahead."),
    "d12": ("Encryption at rest", "Customer data is encrypted at rest with AES-256. Keys are held in a hardware security module. Keys are rotated once a year. Backups are encrypted with separate keys."),
    "d13": ("Network access to production", "Engineers reach production only through a bastion host. Access uses short-lived certificates issued by single sign-on. Every session is recorded. The security team reviews access logs weekly."),
    "d14": ("Data residency", "Customer data stays in the region chosen at sign-up. The regions are Frankfurt, Virginia and Singapore. Replicas for disaster recovery stay within the same jurisdiction. Support staff outside the region cannot read customer data."),
    "d15": ("Deleting an account", "An administrator can delete the workspace from the settings page. Data is removed from live systems within seven days. Backups containing the data expire after thirty-five days. A deletion certificate is sent by email."),
    "d16": ("Single sign-on setup", "Single sign-on supports SAML and OpenID Connect. The identity provider metadata is uploaded in the admin console. Users are created on first login. SCIM provisioning keeps groups in sync."),
    "d17": ("Deploying to production", "Deployments run through the continuous delivery pipeline. Every change needs a green build and one approving review. Deploys roll out to one percent of traffic first. Automatic rollback triggers when error rates rise."),
    "d18": ("Feature flags", "New features ship behind feature flags. Flags can be enabled per customer or per percentage of users. Stale flags are removed within a quarter. Flag changes are audited."),
    "d19": ("On-call rotation", "Engineers join the on-call rotation after three months. A shift lasts one week and is paid extra. The secondary on-call takes over when the primary does not acknowledge a page within ten minutes. Handover happens on Monday mornings."),
    "d20": ("Monitoring and alerts", "Dashboards show latency, errors and saturation for every service. Alerts fire on symptoms that customers notice, not on causes. Every alert links to a runbook. Noisy alerts are tuned or deleted."),
    "d21": ("Log retention", "Application logs are kept for thirty days. Audit logs are kept for one year. Logs never contain passwords or payment card numbers. Access to logs requires a support ticket."),
    "d22": ("Vacation policy", "Employees have twenty-eight days of paid vacation a year. Vacation is requested in the HR system two weeks ahead. Up to five unused days carry over to the next year. Public holidays are not counted."),
    "d23": ("Parental leave", "Parents receive sixteen weeks of fully paid leave. Leave can be split into two blocks within the first year. The manager plans cover for the absence. Returning parents may work part time for three months."),
    "d24": ("Performance reviews", "Performance reviews happen twice a year. Each review combines self-assessment and peer feedback. Promotions are decided by a calibration committee. Salary changes take effect in April."),
    "d25": ("Choosing a password", "Passwords must have at least fourteen characters. Pass phrases made of several words are encouraged. Passwords are never reused across services. The password manager generates and stores them."),
    "d26": ("Reporting phishing", "Suspicious emails are reported with the phishing button. The security team answers within one business day. Never enter credentials on a page opened from an email. Phishing tests are sent every quarter."),
}

QUERIES = {
    "q1": ("how often must api credentials be replaced", ["d1"]),
    "q2": ("what happens when a client sends too many calls", ["d2"]),
    "q3": ("how much data can we lose in a failure", ["d3"]),
    "q4": ("how long does it take to bring a database back", ["d4", "d3"]),
    "q5": ("who talks to customers during an outage", ["d6"]),
    "q6": ("what should I do if my computer is stolen", ["d8"]),
    "q7": ("how much can I spend on food when travelling", ["d10"]),
    "q8": ("in which countries is customer information kept", ["d14"]),
    "q9": ("how do new releases reach users safely", ["d17", "d18"]),
    "q10": ("how many days off do I get", ["d22"]),
    "q11": ("rules for secure passwords", ["d25", "d9"]),
    "q12": ("what to do with a suspicious email", ["d26"]),
}


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, (text, _) in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with (folder / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, (_, docs) in QUERIES.items():
            for doc in docs:
                f.write(f"{qid}\t{doc}\t1\n")
    return folder
