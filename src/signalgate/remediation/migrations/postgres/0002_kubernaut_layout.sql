-- Kubernaut's current RemediationRequest layout (see signalgate.remediation.model; the
-- SQLite dialect of this step is migrations/sqlite/0002):
-- * a resolved notice is the SignalResolved condition: `signal_resolved` is its status
--   (NULL: no condition), `signal_resolved_at` its lastTransitionTime;
-- * the managed-by label is Kubernaut's `gateway-service`;
-- * spec gains providerData (a JSON string {"namespace", "labels"}) and
--   targetResource.apiVersion for the built-in kinds.
ALTER TABLE remediation_requests ADD COLUMN signal_resolved boolean;
UPDATE remediation_requests SET signal_resolved = true WHERE signal_resolved_at IS NOT NULL;
UPDATE remediation_requests
   SET labels = replace(labels, '"app.kubernetes.io/managed-by":"signalgate-gateway"',
                        '"app.kubernetes.io/managed-by":"gateway-service"');
UPDATE remediation_requests
   SET spec = jsonb_set(spec::jsonb, '{providerData}',
                        to_jsonb(jsonb_build_object(
                            'namespace', target_namespace,
                            'labels', coalesce(spec::jsonb -> 'signalLabels', '{}'::jsonb))::text))::text
 WHERE NOT (spec::jsonb ? 'providerData');
UPDATE remediation_requests
   SET spec = jsonb_set(spec::jsonb, '{targetResource,apiVersion}',
                        to_jsonb(CASE spec::jsonb #>> '{targetResource,kind}'
                            WHEN 'Deployment' THEN 'apps/v1'
                            WHEN 'StatefulSet' THEN 'apps/v1'
                            WHEN 'DaemonSet' THEN 'apps/v1'
                            WHEN 'ReplicaSet' THEN 'apps/v1'
                            WHEN 'CronJob' THEN 'batch/v1'
                            WHEN 'Job' THEN 'batch/v1'
                            WHEN 'HorizontalPodAutoscaler' THEN 'autoscaling/v2'
                            WHEN 'PodDisruptionBudget' THEN 'policy/v1'
                            ELSE 'v1'
                        END))::text
 WHERE NOT (spec::jsonb -> 'targetResource' ? 'apiVersion')
   AND spec::jsonb #>> '{targetResource,kind}' IN
       ('Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'CronJob', 'Job',
        'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Pod', 'Node',
        'PersistentVolume', 'PersistentVolumeClaim', 'Service', 'ConfigMap', 'Namespace');
