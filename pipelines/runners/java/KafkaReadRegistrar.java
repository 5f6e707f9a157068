package local.iotplatform.kafka;

import java.io.IOException;
import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.NullableCoder;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.io.Read;
import org.apache.beam.sdk.io.UnboundedSource;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.io.kafka.KafkaRecord;
import org.apache.beam.sdk.io.kafka.TimestampPolicyFactory;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.joda.time.Instant;

/**
 * The relay's Kafka read: Beam's KafkaIO reader as an unbounded source, so that offsets are committed
 * to the consumer group when the runner finalizes a checkpoint (commitOffsetsInFinalize: on Flink, as
 * each checkpoint completes), and optionally for a given time only, counted from when the runner
 * starts the job, so that a relay run with --duration ends with every buffer flushed. Beam 2.62's splittable Kafka read does neither: it commits
 * offsets in five-minute windows, and on Flink its stable-input stage fails at the first checkpoint
 * ("State backend must be locked"). Each element is a record's value as bytes, stamped with Kafka's
 * record time (CreateTime or LogAppendTime, as the topic keeps it), and counted (METRICS_NAMESPACE,
 * RECORDS_HANDED_OVER) so that the relay can tell what the source gave from what reached its sink.
 */
public class KafkaReadRegistrar implements ExternalTransformRegistrar {
  public static final String URN = "local:iotplatform:kafka_read:v1";
  public static final String METRICS_NAMESPACE = "iot_relay_kafka";
  public static final String RECORDS_HANDED_OVER = "records_handed_over";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** The payload Python sends: its fields are set by name. */
  public static class Configuration {
    private String bootstrapServers;
    private String topic;
    private Map<String, String> consumerConfig = new HashMap<>();
    private Long readForMillis;
    private String stopFile;

    public void setBootstrapServers(String bootstrapServers) {
      this.bootstrapServers = bootstrapServers;
    }

    public void setTopic(String topic) {
      this.topic = topic;
    }

    public void setConsumerConfig(Map<String, String> consumerConfig) {
      this.consumerConfig = consumerConfig;
    }

    public void setReadForMillis(Long readForMillis) {
      this.readForMillis = readForMillis;
    }

    public void setStopFile(String stopFile) {
      this.stopFile = stopFile;
    }
  }

  private static class Builder
      implements ExternalTransformBuilder<Configuration, PBegin, PCollection<byte[]>> {
    @Override
    public PTransform<PBegin, PCollection<byte[]>> buildExternal(Configuration config) {
      KafkaIO.Read<byte[], byte[]> read =
          KafkaIO.<byte[], byte[]>read()
              .withBootstrapServers(config.bootstrapServers)
              .withTopic(config.topic)
              // a record may have no key (most producers send none) or no value (a tombstone)
              .withKeyDeserializerAndCoder(ByteArrayDeserializer.class, NullableCoder.of(ByteArrayCoder.of()))
              .withValueDeserializerAndCoder(ByteArrayDeserializer.class, NullableCoder.of(ByteArrayCoder.of()))
              .withConsumerConfigUpdates(new HashMap<String, Object>(config.consumerConfig))
              .withTimestampPolicyFactory(
                  TimestampPolicyFactory.withTimestampFn(record -> new Instant(record.getTimestamp())))
              .commitOffsetsInFinalize();
      long readFor = config.readForMillis == null ? ReadFor.UNLIMITED : config.readForMillis;
      return new ReadValues(
          new ReadFor<>(unboundedSource(read), readFor, ReadFor.NOT_STARTED, config.stopFile));
    }
  }

  /** KafkaIO.Read's own unbounded source (its package keeps the method to itself). */
  @SuppressWarnings("unchecked")
  static UnboundedSource<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark> unboundedSource(
      KafkaIO.Read<byte[], byte[]> read) {
    try {
      Method make = KafkaIO.Read.class.getDeclaredMethod("makeSource");
      make.setAccessible(true);
      return (UnboundedSource<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark>)
          make.invoke(read);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("this Beam's KafkaIO has no makeSource()", e);
    }
  }

  /** The source read as Beam's Read primitive, which Flink runs with its own source operator. */
  private static class ReadValues extends PTransform<PBegin, PCollection<byte[]>> {
    private final ReadFor<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark> source;

    ReadValues(ReadFor<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark> source) {
      this.source = source;
    }

    @Override
    public PCollection<byte[]> expand(PBegin input) {
      // A primitive read (the expansion service runs with use_deprecated_read), not the splittable
      // wrapper: Flink's own reader, which finalizes checkpoint marks as checkpoints complete. Then each
      // record's value, in Java: a source giving the values itself passed Beam 2.62's Python stage one
      // record per partition and no more (2 of 236 read, no error).
      return input
          .apply("Read", Read.from(source))
          .apply("Value", ParDo.of(new Value()))
          .setCoder(ByteArrayCoder.of());
    }
  }

  /**
   * A record's value; none (a tombstone) as no bytes, which the relay sends to the dead letters. Each
   * is counted: the relay compares the count with the records its sink took in.
   */
  private static class Value extends DoFn<KafkaRecord<byte[], byte[]>, byte[]> {
    private final Counter handedOver = Metrics.counter(METRICS_NAMESPACE, RECORDS_HANDED_OVER);

    @ProcessElement
    public void process(@Element KafkaRecord<byte[], byte[]> record, OutputReceiver<byte[]> out) {
      byte[] value = record.getKV().getValue();
      out.output(value == null ? new byte[0] : value);
      handedOver.inc();
    }
  }

  /**
   * An unbounded source that reads for `readFor` milliseconds from when the runner splits it (Flink:
   * as it translates the job, just before starting it), then nothing more, and reports the end of time
   * as its watermark, which ends the runner's read. The deadline is fixed in the splits, which Flink
   * keeps in its checkpoints: a job restored from one stops at the same time. Counted from the job's
   * start, not the command's: the relay's own start-up (expansion, job server, Flink's) took 15 to 30 s
   * here, and a deadline set before it left a loaded machine's job seconds to read, or none (then each
   * reader's first record, and no more). It also stops reading once `stopFile` exists (the relay's
   * Ctrl-C: readers on this machine see it). A record is never read after the stop: what was not read
   * stays uncommitted in Kafka for the next run.
   */
  static class ReadFor<T, C extends UnboundedSource.CheckpointMark> extends UnboundedSource<T, C> {
    static final long UNLIMITED = Long.MAX_VALUE;
    static final long NOT_STARTED = -1;
    private static final int MAX_SPLITS = 10_000;
    private static final long STOP_FILE_CHECK_MILLIS = 200;
    private final UnboundedSource<T, C> source;
    private final long readFor;
    private final long stopAt; // the deadline (epoch ms), or NOT_STARTED before the split
    private final String stopFile; // or null

    ReadFor(UnboundedSource<T, C> source, long readFor, long stopAt, String stopFile) {
      this.source = source;
      this.readFor = readFor;
      this.stopAt = stopAt;
      this.stopFile = stopFile;
    }

    private long deadline() {
      if (stopAt != NOT_STARTED) {
        return stopAt;
      }
      return readFor == UNLIMITED ? UNLIMITED : System.currentTimeMillis() + readFor;
    }

    @Override
    public List<ReadFor<T, C>> split(int desiredNumSplits, PipelineOptions options) throws Exception {
      // One split per partition, whatever the parallelism: a reader of several partitions, on Flink
      // with fewer source tasks than partitions, read one record of each and no more (2 of 1,000).
      long deadline = deadline();
      List<ReadFor<T, C>> splits = new ArrayList<>();
      for (UnboundedSource<T, C> split : source.split(Math.max(desiredNumSplits, MAX_SPLITS), options)) {
        splits.add(new ReadFor<>(split, readFor, deadline, stopFile));
      }
      return splits;
    }

    @Override
    public UnboundedReader<T> createReader(PipelineOptions options, C checkpointMark) throws IOException {
      return new Reader(source.createReader(options, checkpointMark), deadline());
    }

    @Override
    public Coder<C> getCheckpointMarkCoder() {
      return source.getCheckpointMarkCoder();
    }

    @Override
    public Coder<T> getOutputCoder() {
      return source.getOutputCoder();
    }

    @Override
    public boolean requiresDeduping() {
      return source.requiresDeduping();
    }

    private class Reader extends UnboundedReader<T> {
      private final UnboundedReader<T> reader;
      private final long stopAt;
      private boolean ended = false;
      private long stopFileCheckedAt = 0;

      Reader(UnboundedReader<T> reader, long stopAt) {
        this.reader = reader;
        this.stopAt = stopAt;
      }

      @Override
      public boolean start() throws IOException {
        return reader.start(); // past the deadline too: a record it read is emitted, then no more
      }

      @Override
      public boolean advance() throws IOException {
        if (ended || System.currentTimeMillis() >= stopAt || stopAsked()) {
          ended = true;
          return false;
        }
        return reader.advance();
      }

      /** Whether the stop file exists, looked for at most every STOP_FILE_CHECK_MILLIS. */
      private boolean stopAsked() {
        long now = System.currentTimeMillis();
        if (stopFile == null || now - stopFileCheckedAt < STOP_FILE_CHECK_MILLIS) {
          return false;
        }
        stopFileCheckedAt = now;
        return Files.exists(Paths.get(stopFile));
      }

      @Override
      public Instant getWatermark() {
        return ended ? BoundedWindow.TIMESTAMP_MAX_VALUE : reader.getWatermark();
      }

      @Override
      public T getCurrent() throws NoSuchElementException {
        return reader.getCurrent();
      }

      @Override
      public Instant getCurrentTimestamp() throws NoSuchElementException {
        return reader.getCurrentTimestamp();
      }

      @Override
      public byte[] getCurrentRecordId() throws NoSuchElementException {
        return reader.getCurrentRecordId();
      }

      @Override
      public CheckpointMark getCheckpointMark() {
        return reader.getCheckpointMark();
      }

      @Override
      public long getSplitBacklogBytes() {
        return reader.getSplitBacklogBytes();
      }

      @Override
      public UnboundedSource<T, ?> getCurrentSource() {
        return ReadFor.this;
      }

      @Override
      public void close() throws IOException {
        reader.close();
      }
    }
  }
}
