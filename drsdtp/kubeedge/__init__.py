"""KubeEdge device twins: DeviceModel and Device resources (devices.kubeedge.io/v1beta1) for a node's asset
models and twins (:mod:`drsdtp.kubeedge.resources`), and the ``drsdtp kubeedge`` command
(:mod:`drsdtp.kubeedge.cli`)."""
