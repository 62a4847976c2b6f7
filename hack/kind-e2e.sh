#!/usr/bin/env bash
# End-to-end on kind: the real image, the real chart, real pods, probes and image pulls.
# Needs Docker, kind, kubectl (1.31+) and helm on PATH, and two Airflow instances the kind cluster can
# reach (this script does not run Airflow for you).
#
# What it does, in order (nothing else):
#   1. creates the kind cluster $CLUSTER unless it exists;
#   2. builds the image from the repository's Dockerfile and loads it into the cluster;
#   3. applies the CRDs (server-side, as for an upgrade) and installs the chart with that image;
#   4. creates two Secrets with the Airflow credentials and one AirflowAssetSync between them;
#   5. waits for the operator, then for the sync's worker Deployment to be Available and the
#      sync to be Ready, and prints the sync.
# Re-running it upgrades in place. `kind delete cluster --name "$CLUSTER"` removes everything.
#
# Required environment:
#   SOURCE_URL, TARGET_URL   Airflow API base URLs as seen from inside the cluster. Airflow on
#                            your machine is usually reachable at the kind network's gateway,
#                            e.g. http://172.18.0.1:8080 (docker network inspect kind).
#   SOURCE_AUTH, TARGET_AUTH password (Airflow 3, the default), basic (Airflow 2) or token;
#   SOURCE_USERNAME/SOURCE_PASSWORD (or SOURCE_TOKEN), and the same for TARGET_.
# Optional: CLUSTER (airflow-asset-sync-e2e), RELEASE (aas), NAMESPACE (airflow-asset-sync),
#   SYNC_NAMESPACE (default), SYNC_NAME (e2e), IMAGE (airflow-asset-sync:e2e; never :latest,
#   so the pods use the loaded image instead of pulling), TIMEOUT (180s), SKIP_BUILD=1 to
#   reuse an image already loaded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/airflow-asset-sync"

CLUSTER="${CLUSTER:-airflow-asset-sync-e2e}"
RELEASE="${RELEASE:-aas}"
NAMESPACE="${NAMESPACE:-airflow-asset-sync}"
SYNC_NAMESPACE="${SYNC_NAMESPACE:-default}"
SYNC_NAME="${SYNC_NAME:-e2e}"
IMAGE="${IMAGE:-airflow-asset-sync:e2e}"
TIMEOUT="${TIMEOUT:-180s}"
SOURCE_AUTH="${SOURCE_AUTH:-password}"
TARGET_AUTH="${TARGET_AUTH:-password}"

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

: "${SOURCE_URL:?set SOURCE_URL to the source Airflow API URL, as reachable from the cluster}"
: "${TARGET_URL:?set TARGET_URL to the target Airflow API URL, as reachable from the cluster}"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
[[ "${IMAGE##*/}" == *:* && "$IMAGE" != *:latest ]] ||
  die "IMAGE needs an explicit tag other than latest (got $IMAGE)"

KUBECTL=(kubectl --context "kind-$CLUSTER")
HELM=(helm --kube-context "kind-$CLUSTER")

# secret_env SIDE AUTH: one side's credentials as env-file lines (`key=value`), printed by a
# shell builtin so that no password appears on a command line.
secret_env() {
  local side="$1" auth="$2" user_var pass_var token_var
  user_var="${side}_USERNAME"
  pass_var="${side}_PASSWORD"
  token_var="${side}_TOKEN"
  case "$auth" in
    basic | password)
      [[ -n "${!user_var:-}" && -n "${!pass_var:-}" ]] || die "set $user_var and $pass_var"
      printf 'username=%s\npassword=%s\n' "${!user_var}" "${!pass_var}"
      ;;
    token)
      [[ -n "${!token_var:-}" ]] || die "set $token_var"
      printf 'token=%s\n' "${!token_var}"
      ;;
    *) die "${side}_AUTH must be password, basic or token (got $auth)" ;;
  esac
}

# Checked before anything is created (a plain assignment: `set -e` stops on a bad setting).
source_env="$(secret_env SOURCE "$SOURCE_AUTH")"
target_env="$(secret_env TARGET "$TARGET_AUTH")"

say "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi

if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  say "docker build -t $IMAGE"
  docker build -t "$IMAGE" "$ROOT"
  say "kind load docker-image $IMAGE"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
fi

say "CRDs (server-side apply: the same command upgrades them)"
"${KUBECTL[@]}" apply --server-side --force-conflicts -f "$CHART/crds/"
"${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
  crd/airflowassetsyncs.airflow-asset-sync.github.io

say "helm upgrade --install $RELEASE ($NAMESPACE)"
"${HELM[@]}" upgrade --install "$RELEASE" "$CHART" \
  --namespace "$NAMESPACE" --create-namespace \
  --set "image.repository=${IMAGE%:*}" \
  --set "image.tag=${IMAGE##*:}" \
  --set image.pullPolicy=IfNotPresent \
  --wait --timeout "$TIMEOUT"

say "Secrets and AirflowAssetSync $SYNC_NAMESPACE/$SYNC_NAME"
"${KUBECTL[@]}" create namespace "$SYNC_NAMESPACE" --dry-run=client -o yaml |
  "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$SYNC_NAMESPACE" create secret generic "$SYNC_NAME-source" \
  --from-env-file=/dev/stdin --dry-run=client -o yaml <<<"$source_env" |
  "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" -n "$SYNC_NAMESPACE" create secret generic "$SYNC_NAME-target" \
  --from-env-file=/dev/stdin --dry-run=client -o yaml <<<"$target_env" |
  "${KUBECTL[@]}" apply -f -

"${KUBECTL[@]}" -n "$SYNC_NAMESPACE" apply -f - <<EOF
apiVersion: airflow-asset-sync.github.io/v1alpha1
kind: AirflowAssetSync
metadata:
  name: $SYNC_NAME
spec:
  source:
    url: "$SOURCE_URL"
    auth:
      $SOURCE_AUTH:
        secretName: $SYNC_NAME-source
  targets:
    - name: target
      url: "$TARGET_URL"
      auth:
        $TARGET_AUTH:
          secretName: $SYNC_NAME-target
EOF

say "waiting for the worker Deployment and the sync (timeout $TIMEOUT each)"
worker="$SYNC_NAME-worker"
# The operator creates the Deployment on its first reconcile (--for=create: kubectl 1.31+).
if ! "${KUBECTL[@]}" -n "$SYNC_NAMESPACE" wait --for=create --timeout=60s "deployment/$worker" ||
  ! "${KUBECTL[@]}" -n "$SYNC_NAMESPACE" wait --for=condition=Available \
  --timeout="$TIMEOUT" "deployment/$worker" ||
  ! "${KUBECTL[@]}" -n "$SYNC_NAMESPACE" wait --for=condition=Ready \
    --timeout="$TIMEOUT" "airflowassetsync/$SYNC_NAME"; then
  "${KUBECTL[@]}" -n "$SYNC_NAMESPACE" describe airflowassetsync "$SYNC_NAME" >&2 || true
  "${KUBECTL[@]}" -n "$SYNC_NAMESPACE" logs "deployment/$worker" --tail=50 >&2 || true
  die "the sync did not become Ready"
fi

say "Ready"
"${KUBECTL[@]}" -n "$SYNC_NAMESPACE" get airflowassetsync "$SYNC_NAME" -o wide
echo "Cluster $CLUSTER stays up; remove it with: kind delete cluster --name $CLUSTER"
