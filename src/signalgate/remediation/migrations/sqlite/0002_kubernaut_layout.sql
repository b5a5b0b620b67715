-- Kubernaut's current RemediationRequest layout (see signalgate.remediation.model):
-- * a resolved notice is the SignalResolved condition: `signal_resolved` is its status
--   (NULL: no condition), `signal_resolved_at` its lastTransitionTime;
-- * the managed-by label is Kubernaut's `gateway-service`;
-- * spec gains providerData (a JSON string {"namespace", "labels"}) and
--   targetResource.apiVersion for the built-in kinds.
ALTER TABLE remediation_requests ADD COLUMN signal_resolved INTEGER;
UPDATE remediation_requests SET signal_resolved = 1 WHERE signal_resolved_at IS NOT NULL;
UPDATE remediation_requests
   SET labels = replace(labels, '"app.kubernetes.io/managed-by":"signalgate-gateway"',
                        '"app.kubernetes.io/managed-by":"gateway-service"');
-- `|| ''` makes the JSON object plain text, so json_set stores it as a string
UPDATE remediation_requests
   SET spec = json_set(spec, '$.providerData',
                       json_object('namespace', target_namespace,
                                   'labels', json(coalesce(json_extract(spec, '$.signalLabels'), '{}')))
                       || '')
 WHERE json_type(spec, '$.providerData') IS NULL;
UPDATE remediation_requests
   SET spec = json_set(spec, '$.targetResource.apiVersion',
                       CASE json_extract(spec, '$.targetResource.kind')
                           WHEN 'Deployment' THEN 'apps/v1'
                           WHEN 'StatefulSet' THEN 'apps/v1'
                           WHEN 'DaemonSet' THEN 'apps/v1'
                           WHEN 'ReplicaSet' THEN 'apps/v1'
                           WHEN 'CronJob' THEN 'batch/v1'
                           WHEN 'Job' THEN 'batch/v1'
                           WHEN 'HorizontalPodAutoscaler' THEN 'autoscaling/v2'
                           WHEN 'PodDisruptionBudget' THEN 'policy/v1'
                           ELSE 'v1'
                       END)
 WHERE json_type(spec, '$.targetResource.apiVersion') IS NULL
   AND json_extract(spec, '$.targetResource.kind') IN
       ('Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'CronJob', 'Job',
        'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Pod', 'Node',
        'PersistentVolume', 'PersistentVolumeClaim', 'Service', 'ConfigMap', 'Namespace');
