-- Argo CD health check for serving.modeldeploy.io/ModelDeployment.
-- Healthy: phase Ready, for the current generation of the spec.
-- Progressing: no status yet, a status of an older generation, or phase Pending, Progressing
--   or Paused (a canary waiting for a human to promote or abort it).
-- Degraded: phase Degraded or Failed, with the message of the Degraded condition.
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = message_of(condition(status, "Ready"), "Ready")
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. message_of(condition(status, "Degraded"), "no reason reported")
elseif phase == "Paused" then
  hs.status = "Progressing"
  hs.message = "Paused: " .. message_of(condition(status, "Progressing"),
    "the canary waits to be promoted or aborted")
elseif phase == "Pending" or phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message_of(condition(status, "Progressing"),
    message_of(condition(status, "Ready"), "rollout in progress"))
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
