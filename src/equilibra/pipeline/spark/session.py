"""A SparkSession for one fit: quiet, without a web UI, Arrow for transfers to the driver."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from equilibra.errors import EquilibraError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Debian's libpostgresql-jdbc-java puts the driver here; EQUILIBRA_SPARK_JARS overrides.
DEBIAN_POSTGRES_JAR = Path("/usr/share/java/postgresql.jar")
DEFAULT_MASTER = "local[*]"


def spark_available() -> str | None:
    """None when Spark can run here; otherwise what is missing, as one sentence."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "engine: spark needs pyspark; pip install 'equilibra[spark]'"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "engine: spark needs Java 17 or newer (Debian: apt-get install default-jre-headless)"
    return None


def _jars() -> str:
    configured = os.environ.get("EQUILIBRA_SPARK_JARS")
    if configured is not None:
        return configured
    return str(DEBIAN_POSTGRES_JAR) if DEBIAN_POSTGRES_JAR.exists() else ""


def _local_cores(master: str) -> int:
    inner = master.removeprefix("local").strip("[]") or "1"
    head = inner.split(",")[0]
    return os.cpu_count() or 2 if head == "*" else max(1, int(head))


@contextmanager
def spark_session(
    master: str = DEFAULT_MASTER, app_name: str = "equilibra-fit"
) -> Iterator[SparkSession]:
    """Start (or join) a SparkSession on `master`; stop it afterwards if this call started it.

    Shuffles use a few partitions per core on a local master (Spark's 200 default makes tiny
    tasks dominate on two cores); a cluster keeps Spark's own settings unless
    EQUILIBRA_SPARK_PARTITIONS says otherwise.
    """
    missing = spark_available()
    if missing:
        raise EquilibraError(missing)
    from pyspark.sql import SparkSession

    if not (master.startswith(("local", "spark://", "yarn", "k8s://", "mesos://"))):
        raise EquilibraError(f"master: {master!r} is not a Spark master URL (local[2], spark://…)")
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    scratch = Path(tempfile.mkdtemp(prefix="equilibra-spark-"))
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.local.dir", str(scratch))
        .config("spark.driver.memory", os.environ.get("EQUILIBRA_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.driver.maxResultSize", "0")
    )
    partitions = os.environ.get("EQUILIBRA_SPARK_PARTITIONS")
    if partitions is None and master.startswith("local"):
        partitions = str(4 * _local_cores(master))
    if partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", partitions)
        builder = builder.config("spark.default.parallelism", partitions)
    jars = _jars()
    if jars:
        builder = builder.config("spark.jars", jars)
    logging.getLogger("py4j").setLevel(logging.ERROR)
    # The JVM inherits this process's environment: one BLAS thread per Spark task, or
    # OpenBLAS's own threads fight the task threads for the cores.
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        session = builder.config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1").getOrCreate()
    except Exception as exc:  # the JVM failed to start: say so in one line
        shutil.rmtree(scratch, ignore_errors=True)
        raise EquilibraError(f"engine: Spark did not start on {master}: {exc}") from None
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    session.sparkContext.setLogLevel("ERROR")
    # ALS's long lineage is cut by checkpoints; they need a folder.
    session.sparkContext.setCheckpointDir(str(scratch / "checkpoints"))
    try:
        yield session
    finally:
        session.stop()
        shutil.rmtree(scratch, ignore_errors=True)
