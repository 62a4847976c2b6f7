"""What each condition reason means and what to do about it: one table, two readers.

`kubectl describe aas` shows the conditions; the Stalled or Reconciling condition (Ready's,
when it stands alone) ends with the action from here, so a new user reads what to do where
the problem is reported. The README's troubleshooting table is rendered from the same table
(`scripts/gen-troubleshooting`; a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hint:
    meaning: str
    action: str


_SECRET = "the Secret named in spec (username/password or token key), then wait for the rollout"

HINTS: dict[str, Hint] = {
    # From reconcile steps.
    "InvalidSpec": Hint(
        "the spec passed the CRD's schema but not the model (a regular expression that does "
        "not compile, or an object stored before a stricter CRD)",
        "fix the field the message names; nothing runs until then",
    ),
    "WorkerImageUnset": Hint(
        "no worker image is configured",
        "set spec.worker.image, or the chart's workerImage value (AAS_WORKER_IMAGE)",
    ),
    "SecretNotFound": Hint(
        "a Secret the spec names does not exist in the sync's namespace",
        "create it; the operator retries with back-off and converges",
    ),
    "SecretKeyNotFound": Hint(
        "a Secret the spec names lacks the key",
        "add the key, or point the spec at the right one",
    ),
    "ChildConflict": Hint(
        "an object with the worker's name belongs to another owner",
        "delete or rename that object; the operator never takes one over",
    ),
    "KubernetesApiError": Hint(
        "the API server refused a request of the operator",
        "read the message: a 403 means the operator's RBAC lacks a verb (reinstall the chart)",
    ),
    # From the worker Deployment.
    "Progressing": Hint(
        "the worker is rolling out", "nothing: wait for Ready; see the pod if it lasts"
    ),
    "WorkerUnavailable": Hint(
        "the worker pod is not ready",
        "kubectl logs deploy/<name>-worker; the readiness probe fails while no poll succeeds",
    ),
    "RolloutFailed": Hint(
        "the worker's rollout exceeded its progress deadline",
        "kubectl describe pod -l app.kubernetes.io/instance=<name>; fix the image or resources",
    ),
    "Suspended": Hint("spec.suspend is true", "set spec.suspend to false to resume"),
    # From the worker (status.source.failure, status.targets[].failure).
    "SourceAuthFailed": Hint(
        "the source Airflow refuses the worker's credentials",
        f"check {_SECRET}; Airflow 2.x needs the basic_auth API backend, 3.x auth password",
    ),
    "TargetAuthFailed": Hint(
        "a target Airflow refuses the worker's credentials; nothing is written to it",
        f"check {_SECRET}; events wait in Kafka and follow once it is fixed",
    ),
    "KafkaAuthFailed": Hint(
        "Kafka refuses the worker's SASL credentials or ACLs",
        "check spec.kafka.security.sasl and its Secret, and the ACLs on the topic and group",
    ),
    "SourceTLSFailed": Hint(
        "the source's certificate does not verify (unknown CA, expired, wrong host name)",
        "set spec.source.tls.caSecretName to the CA that signed it, or fix the URL's host",
    ),
    "TargetTLSFailed": Hint(
        "a target's certificate does not verify (unknown CA, expired, wrong host name)",
        "set spec.targets[].tls.caSecretName to the CA that signed it, or fix the URL's host",
    ),
    "KafkaConfigInvalid": Hint(
        "the Kafka settings cannot work (a CA that does not verify, SASL without "
        "credentials, a topic Kafka refuses)",
        "fix spec.kafka.security as the message says (caSecretName, protocol, sasl)",
    ),
    "SourceRejected": Hint(
        "the source answers, but not as the Airflow API does (a proxy page, a wrong path)",
        "check spec.source.url points at the Airflow API server and apiVersion fits it",
    ),
    "TargetRejected": Hint(
        "a target answers, but not as the Airflow API does (a proxy page, a wrong path)",
        "check spec.targets[].url points at the Airflow API server and apiVersion fits it",
    ),
    "KafkaRejected": Hint(
        "Kafka refused a request for good (a record too large, an invalid topic)",
        "read the message; check the topic's settings",
    ),
    "SourceUnavailable": Hint(
        "the source has not answered for over a minute",
        "nothing if it is down on purpose: polling resumes where it stopped",
    ),
    "TargetUnavailable": Hint(
        "a target has not answered for over a minute",
        "nothing if it is down on purpose: its events wait and follow, once each",
    ),
    "KafkaUnavailable": Hint(
        "Kafka has not answered for over a minute",
        "check the brokers and spec.kafka.bootstrapServers; nothing is lost meanwhile",
    ),
    # From the worker's gap report (status.source.lastGap); condition EventsLost, not Ready.
    "SourceEventsPurged": Hint(
        "the source's history was purged (airflow db clean) past what the worker had read; "
        "events written in between may never reach the targets",
        "nothing brings purged events back: re-emit them in the source if they matter (the "
        "message gives the time range), and keep db clean's retention longer than a worker "
        "can be down",
    ),
}


def action(reason: str) -> str | None:
    """What to do for `reason`, or None when the table has nothing."""
    hint = HINTS.get(reason)
    return hint.action if hint is not None else None


def with_action(reason: str, message: str) -> str:
    """`message`, then what to do."""
    todo = action(reason)
    return f"{message}. What to do: {todo}" if todo else message


def troubleshooting_rows() -> list[str]:
    """The README's table rows for every reason, in table order."""
    return [f"| `{reason}` | {hint.meaning} | {hint.action} |" for reason, hint in HINTS.items()]
