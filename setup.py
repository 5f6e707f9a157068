"""Install the IoT Platform connector for Apache Beam.

Also the file Dataflow stages with ``--setup_file``, so workers get the same package.
"""
import setuptools

setuptools.setup(
    name="iot-platform-beam-connector",
    version="0.1.0",
    description="Apache Beam sink for Alibaba Cloud IoT Platform's HTTPS device channel, with a local emulator",
    packages=setuptools.find_packages(include=["connector", "connector.*", "pipelines", "pipelines.*"]),
    # The emulator's console: its page, styles and scripts are served from the installed package.
    # py.typed: the connector's annotations are its users' too (PEP 561).
    # pipelines.runners: the Java sources fetch sql and fetch kafka compile into their jars, and the Go
    # program (with its pinned module versions) fetch pubsub builds.
    package_data={"connector": ["py.typed"], "connector.emulator": ["console/*"],
                  "pipelines.runners": ["java/*.java", "go/pubsub/*"]},
    python_requires=">=3.11",
    install_requires=[
        # Tested on 2.62.0 (every runner: Flink, Prism, in-process) and on the newest release PyPI
        # serves (every runner but Flink, whose runner Maven Central serves for no later release checked;
        # first run on 2.77.0). CI runs the suite on both (.ci/run; the README's "Which Beam is tested for
        # what").
        "apache-beam>=2.62",
        "requests>=2.31",
        "fastavro>=1.9",
        # The JSON encoders: ten times the json module's speed on the backfill's largest cost (see encoders.py).
        "orjson>=3.9",
        # The emulator: aiohttp.web writes header names in canonical case (the platform's legacy C SDK
        # needs that) and serves thousands of TLS keep-alive requests per second on one core.
        "aiohttp>=3.9",
        # The emulator generates its CA and RSA server certificate at start; the stdlib cannot.
        "cryptography>=41",
    ],
    extras_require={
        # The tests, on the newest Beam pip finds unless the flink extra pins it (below).
        "test": ["apache-beam[yaml]>=2.62", "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "psutil>=5.9",
                 # The console's tests drive a real headless Chromium through its chromedriver.
                 "selenium>=4.20",
                 # The Kafka relay tests produce their readings to the broker with a pure-Python client
                 # (the relay itself reads with Beam's KafkaIO, in Java).
                 "kafka-python>=2.2",
                 # The Pub/Sub relay test (google-cloud-pubsub, with ReadFromPubSub against Google's pstest
                 # server) and the Dataflow dry-run test (DataflowRunner builds the job offline) need
                 # Beam's Google Cloud extra.
                 "apache-beam[gcp]>=2.62"],
        # The Flink runner: 2.62.0 is the newest Beam whose Flink runner Maven Central serves with all its
        # dependencies, so that python -m pipelines.runners fetch flink can build its job server (and sql
        # Beam SQL's expansion service). CI runs the suite with it (".[test,flink]") and again on the
        # newest Beam (".[test]"), where the Flink and SQL tests skip.
        "flink": ["apache-beam==2.62.0"],
        # WriteToIoTPlatform in Beam YAML pipelines (connector.beam.yaml_provider): apache_beam.yaml needs
        # jinja2, docstring_parser and pandas, which Beam's own yaml extra brings in the versions it supports.
        "yaml": ["apache-beam[yaml]>=2.62"],
        # The linters CI runs (.ci/run), pinned so that a new release's rules do not fail an unchanged tree.
        "lint": ["ruff==0.17.6", "mypy==2.4.1"],
    },
)
