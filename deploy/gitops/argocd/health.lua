-- Argo CD health of an AirflowAssetSync, from the kstatus-style conditions the operator writes
-- (operator/airflow_asset_sync/controller/conditions.py):
--   Stalled=True                 -> Degraded    (a person must act: invalid spec, name conflict,
--                                                failed rollout)
--   Paused=True                  -> Suspended   (spec.suspend: the worker is scaled to zero)
--   Ready=True                   -> Healthy
--   Reconciling=True             -> Progressing (a rollout, a wait for a Secret, a retry)
--   Ready=False                  -> Degraded    (e.g. the worker pod is unavailable)
--   no status, an older observedGeneration, or Ready=Unknown -> Progressing
-- Installed as resource.customizations.health.airflow-asset-sync.github.io_AirflowAssetSync in
-- argocd-cm (see argocd-cm.yaml next to this file, which embeds this file verbatim).
local hs = {}

local function find(conditions, wanted)
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = find(conditions, "Ready")
local stalled = find(conditions, "Stalled")
local paused = find(conditions, "Paused")
local reconciling = find(conditions, "Reconciling")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
elseif is_true(paused) then
  hs.status = "Suspended"
  hs.message = message(paused, "Suspended")
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready")
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = message(ready, "Not ready")
else
  hs.status = "Progressing"
  hs.message = message(ready, "Waiting for the sync to become ready")
end
return hs
