"""Named Beam profiles -> `beam_pipeline_args` for every Beam-based component of the DAG.

    beam_args("in_memory")                         # the default: configs.BEAM_IN_MEMORY
    beam_args("multi_processing", workers=4)       # direct runner, one process per core
    beam_args("dataflow", project="p", region="europe-west4",
              temp_location="gs://b/tmp", image="REGISTRY/finetower:TAG")
    beam_args("flink", flink_master="host:8081", image=...)
    beam_args("spark", spark_master_url="spark://host:7077", image=...)

Local profiles name the DirectRunner and its running mode explicitly: Beam 2.77's default
runner otherwise tries to download the Prism runner for every job (it fails offline). The
remote profiles run our image on the workers (`--sdk_container_image` for Dataflow, DOCKER
environment for Flink and Spark), so workers import the same code and pins as the pipeline's
containers, the TFDV shim included.

Every profile names where its workers get the code (`--sdk_container_image`): without such a
flag TFX packs itself into a 52 MB sdist for every Beam component (3 s each, a /tmp dir left
behind) to ship to workers that already have it. The local profiles' workers run in the
launching environment; `image` names it when that is a container (the KFP runner passes its
image), else configs.IN_PROCESS_ENVIRONMENT says so.
"""

from __future__ import annotations

import os

from pipeline.configs import BEAM_IN_MEMORY, DIRECT_RUNNER_CODE

PROFILES = ("in_memory", "multi_processing", "dataflow", "flink", "spark")
# profiles whose workers run our container image
REMOTE_PROFILES = ("dataflow", "flink", "spark")


def _require(profile: str, options: dict, *names: str) -> None:
    missing = [n for n in names if not options.get(n)]
    if missing:
        raise ValueError(f"Beam profile {profile!r} needs {', '.join(missing)}")


def _extra(options: dict, known: set[str]) -> list[str]:
    """Options this profile does not name, passed through as `--key=value` (any other flag of
    that runner), so that no option given is dropped."""
    return [f"--{k}={v}" for k, v in sorted(options.items()) if k not in known and v is not None]


def beam_args(profile: str = "in_memory", **options) -> list[str]:
    """`beam_pipeline_args` for `profile` (one of PROFILES) and its options.

    in_memory: `image` (the container the pipeline runs in, if any). multi_processing:
    `workers` (default: the machine's cores), `image`.
    dataflow: `project`, `region`, `temp_location`, `image` required; `staging_location`,
    `max_num_workers`, `machine_type`, `service_account_email`, `network`/`subnetwork`,
    any other Dataflow flag as a keyword. flink: `flink_master`, `image`; `parallelism`,
    `job_server_jar` (a local Flink job-server jar, so Beam does not download one).
    spark: `spark_master_url`, `image`; `job_server_jar` likewise.

    Raises ValueError naming an unknown profile or a missing required option."""
    options = {k: v for k, v in options.items() if v is not None}
    if profile == "in_memory":
        code = _direct_runner_code(options.pop("image", None))
        if options:
            raise ValueError(
                f"Beam profile 'in_memory' takes no options but image, got {sorted(options)}"
            )
        return [code if a == DIRECT_RUNNER_CODE else a for a in BEAM_IN_MEMORY]
    if profile == "multi_processing":
        workers = int(options.pop("workers", 0) or os.cpu_count() or 1)
        code = _direct_runner_code(options.pop("image", None))
        if options:
            raise ValueError(
                f"Beam profile 'multi_processing' takes only workers and image: {options}"
            )
        return [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}",
            code,
        ]
    if profile == "dataflow":
        _require(profile, options, "project", "region", "temp_location", "image")
        args = [
            "--runner=DataflowRunner",
            f"--project={options['project']}",
            f"--region={options['region']}",
            f"--temp_location={options['temp_location']}",
            f"--staging_location={options.get('staging_location', options['temp_location'])}",
            # our image on the workers: the code and pins of the pipeline's own containers
            f"--sdk_container_image={options['image']}",
            "--sdk_location=container",  # the image has Beam: stage no SDK tarball
            "--experiments=use_runner_v2",  # custom containers need Runner v2
        ]
        known = {"project", "region", "temp_location", "staging_location", "image"}
        return args + _extra(options, known)
    if profile == "flink":
        _require(profile, options, "flink_master", "image")
        args = [
            "--runner=FlinkRunner",
            f"--flink_master={options['flink_master']}",
            "--environment_type=DOCKER",
            f"--environment_config={options['image']}",
            # the same image, in the flag TFX reads (else it ships its own sdist to it)
            f"--sdk_container_image={options['image']}",
        ]
        if options.get("parallelism"):
            args.append(f"--parallelism={int(options['parallelism'])}")
        if options.get("job_server_jar"):
            args.append(f"--flink_job_server_jar={options['job_server_jar']}")
        known = {"flink_master", "image", "parallelism", "job_server_jar"}
        return args + _extra(options, known)
    if profile == "spark":
        _require(profile, options, "spark_master_url", "image")
        args = [
            "--runner=SparkRunner",
            f"--spark_master_url={options['spark_master_url']}",
            "--environment_type=DOCKER",
            f"--environment_config={options['image']}",
            f"--sdk_container_image={options['image']}",
        ]
        if options.get("job_server_jar"):
            args.append(f"--spark_job_server_jar={options['job_server_jar']}")
        known = {"spark_master_url", "image", "job_server_jar"}
        return args + _extra(options, known)
    raise ValueError(f"unknown Beam profile {profile!r}: expected one of {', '.join(PROFILES)}")


def _direct_runner_code(image: str | None) -> str:
    """The DirectRunner's dependency flag: its workers run where the pipeline runs."""
    return f"--sdk_container_image={image}" if image else DIRECT_RUNNER_CODE


def beam_args_from_environment(
    environ=os.environ, profile: str | None = None, **defaults
) -> list[str] | None:
    """The profile `profile` (else FINETOWER_BEAM_PROFILE) with its options from
    FINETOWER_BEAM_<OPTION> (e.g. FINETOWER_BEAM_PROJECT, FINETOWER_BEAM_WORKERS), `defaults`
    filling options the environment does not set; None when no profile is named (the
    configuration's beam_pipeline_args then apply)."""
    profile = profile or environ.get("FINETOWER_BEAM_PROFILE")
    if not profile:
        return None
    prefix = "FINETOWER_BEAM_"
    skip = (prefix + "PROFILE", prefix + "PIPELINE_ARGS")  # the latter is configs' own knob
    options = {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix)}
    options = {k: v for k, v in options.items() if prefix + k.upper() not in skip}
    for key, value in defaults.items():
        options.setdefault(key, value)
    return beam_args(profile, **options)
