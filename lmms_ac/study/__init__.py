"""``lmms-ac study``: a whole study (models x benchmarks x probes, A/C scores, reports) from one YAML
file; resumable; on the local machine or a SLURM cluster through submitit.

Modules: ``spec`` (the file and its validation), ``plan`` (units, jobs, stable ids, commands),
``state`` (what the output folder says is done; done claimed once), ``liveness`` (is a job running: pid and
start time, SLURM id and submission name), ``slurm_queue`` (squeue / sacct), ``lock`` (one ``study run``
per study), ``progress`` (read-only view for status and report), ``worker`` (run one job, read its results
back), ``executors`` (local), ``slurm`` (submitit arrays, watched through our records), ``runner``
(orchestration, dry runs), ``status``, ``report``, ``cli``.
"""
