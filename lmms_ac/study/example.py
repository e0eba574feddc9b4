"""The commented example study file written by ``lmms-ac study init``."""

EXAMPLE = """\
# An lmms-ac study: every evaluation and score of a study in one file.
#   lmms-ac study plan   THIS_FILE            # the job table and the estimated cost
#   lmms-ac study plan   THIS_FILE --dry-run  # write the exact commands / sbatch scripts, run nothing
#   lmms-ac study run    THIS_FILE            # run what is not done yet (safe to rerun after an interruption)
#   lmms-ac study status THIS_FILE [--watch]  # done / running / failed / pending per model and benchmark
#   lmms-ac study report THIS_FILE            # table, scores, leaderboard, law fit, recommendation, plots
# Relative paths are relative to this file's folder.

name: law-study
output: runs/law-study            # everything the study writes goes here

# Trained checkpoints, evaluated with lmms-eval's `lmms_ac_llava` model.
models:
  - name: clip336                 # unique; also the variant name unless `variant:` is set
    pretrained: ckpts/llava-clip336                  # llava-hf or original-LLaVA checkpoint (dir or hub id)
    # model_base: lmsys/vicuna-7b-v1.5               # for a checkpoint holding only mm_projector.bin
    # vision_tower: clip:openai/clip-vit-large-patch14-336   # override the checkpoint's tower
    model_args: {dtype: float16}                     # any other lmms_ac_llava model argument
    stage1: ckpts/llava-clip336-pretrain             # stage-1 checkpoint: the A score reads it
    vision: clip:openai/clip-vit-large-patch14-336   # representation spec: the C and C_ocr scores read it
  - name: dinov2
    pretrained: ckpts/llava-dinov2
    model_args: {dtype: float16}
    stage1: ckpts/llava-dinov2-pretrain
    vision: dinov2:facebook/dinov2-large
    # benchmarks: [mme]           # only these of the study's benchmarks for this model
    # probes: [patchshuffle4]     # only these of the study's probes (their perturbation: or tag:) for this
                                  # model; true (default): all, false: none. On LLaVA-NeXT/OneVision (tiled
                                  # input) a probe not defined on the views is refused: `study plan` names it

# Representations scored for A and/or C only (not trained yet): the law predicts them and
# `study report` recommends which to train next.
candidates:
  - name: siglip
    vision: siglip:google/siglip-so400m-patch14-384

# lmms-eval task names, run on every model (one job per model: the model loads once).
benchmarks: [mme, seed]

# Robustness variants from the catalogue (`lmms-ac tasks` lists them), on the benchmarks above.
probes:
  - perturbation: patchshuffle4   # seed-free form; or a probe name (pdrop_random = all its ratios)
    seeds: 5                      # seeds 0..4 (default: all the catalogue has)
    benchmarks: [mme]             # default: every benchmark of the study the catalogue covers
  # - tag: seed_tokperm_5seeds    # or any generated tag

lmms_eval:
  batch_size: 8
  # limit: 100                    # documents per task (quick looks; part of the job ids)
  log_samples: true
  tasks_per_job: 0                # 0: all pending tasks of a model in one job
  # extra_args: [--seed, "0,1234,1234,1234"]
  # env: {HF_HOME: /data/hf}

scores:
  A: {captions: data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json, images: data/LLaVA-Pretrain/images, n: 100}
  C: {spair: data/SPair-71k, split: test}
  C_ocr: {n: 200, seed: 0}
  device: auto                    # auto: cuda when the job has a GPU, else cpu

executor:
  type: local                     # local: jobs run on this machine | slurm: job arrays through submitit
  gpus: auto                      # local: auto (every visible GPU), none (CPU only), a count, or a list [0, 1]
  gpus_per_job: 1                 # local: GPUs per job; jobs run in parallel, one per group of this many GPUs
  accelerate: false               # local: lmms-eval under `accelerate launch --num_processes gpus_per_job`
  max_attempts: 2                 # a job that ran and failed is retried until it failed this often (then
                                  # `study run --retry-failed`); interruptions (kill, scancel, preemption,
                                  # requeue, node failure) never count: the next `study run` resumes them
  slurm:                          # used when type: slurm
    partition: gpu                # --partition (default: the cluster's default partition)
    # account: my-lab             # --account
    # qos: normal                 # --qos
    time: 240                     # minutes per job (--time); a job that runs out is requeued (up to 3 times)
    gpus_per_job: 1               # GPUs per job (--gpus-per-node); 0 for CPU-only jobs
    cpus_per_job: 8               # --cpus-per-task
    # mem_gb: 64                  # memory per job in GB (--mem); default: the partition's
    # constraint: a100            # --constraint (node features)
    array_parallelism: 32         # at most this many jobs of the study run at once (array %limit)
    setup: []                     # shell lines before each job, e.g. ["module load cuda/12.4"]
    # additional: {exclude: "node[01-02]", mail-type: END}   # any other #SBATCH option, as is
    requeue: true                 # preempted or timed-out jobs requeue themselves (submitit checkpoint)
    poll_s: 10                    # seconds between looks at the queue (squeue) while `study run` waits;
                                  # each look is one squeue call, so keep it >= 10 on a busy cluster
  # A job is running while its recorded worker (host, pid, start time) is alive or its SLURM job (id and
  # submission name) is in the queue; a rerun never starts it twice, and one `study run` at a time holds
  # the study (a second waits for it). The output folder must be on a filesystem the nodes share.

report:
  outputs: [table, scores, leaderboard, fit, recommend, robustness, plots, html]
  # benchmarks: [mme]             # default: every benchmark with results
  # metrics: {mme: mme_perception_score}
  recommend_benchmark: mme        # the benchmark `policy recommend` optimises
  normalize: minmax

# env: {HF_HUB_OFFLINE: "1"}      # environment of every job
"""
