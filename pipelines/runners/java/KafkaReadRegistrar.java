package local.iotplatform.kafka;

import java.io.IOException;
import java.lang.reflect.Method;
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
 * each checkpoint completes), with an optional time at which to stop reading, so that a relay run with
 * --duration ends with every buffer flushed. Beam 2.62's splittable Kafka read does neither: it commits
 * offsets in five-minute windows, and on Flink its stable-input stage fails at the first checkpoint
 * ("State backend must be locked"). Each element is a record's value as bytes, stamped with Kafka's
 * record time (CreateTime or LogAppendTime, as the topic keeps it).
 */
public class KafkaReadRegistrar implements ExternalTransformRegistrar {
  public static final String URN = "local:iotplatform:kafka_read:v1";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** The payload Python sends: its fields are set by name. */
  public static class Configuration {
    private String bootstrapServers;
    private String topic;
    private Map<String, String> consumerConfig = new HashMap<>();
    private Long stopReadingAtMillis;

    public void setBootstrapServers(String bootstrapServers) {
      this.bootstrapServers = bootstrapServers;
    }

    public void setTopic(String topic) {
      this.topic = topic;
    }

    public void setConsumerConfig(Map<String, String> consumerConfig) {
      this.consumerConfig = consumerConfig;
    }

    public void setStopReadingAtMillis(Long stopReadingAtMillis) {
      this.stopReadingAtMillis = stopReadingAtMillis;
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
      long stopAt = config.stopReadingAtMillis == null ? Long.MAX_VALUE : config.stopReadingAtMillis;
      return new ReadValues(new StopAt<>(unboundedSource(read), stopAt));
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
    private final StopAt<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark> source;

    ReadValues(StopAt<KafkaRecord<byte[], byte[]>, UnboundedSource.CheckpointMark> source) {
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

  /** A record's value; none (a tombstone) as no bytes, which the relay sends to the dead letters. */
  private static class Value extends DoFn<KafkaRecord<byte[], byte[]>, byte[]> {
    @ProcessElement
    public void process(@Element KafkaRecord<byte[], byte[]> record, OutputReceiver<byte[]> out) {
      byte[] value = record.getKV().getValue();
      out.output(value == null ? new byte[0] : value);
    }
  }

  /**
   * An unbounded source that reads nothing more once the wall clock passes `stopAt`, and then reports
   * the end of time as its watermark, which ends the runner's read. A record is never read after the
   * deadline: what was not read stays uncommitted in Kafka for the next run.
   */
  static class StopAt<T, C extends UnboundedSource.CheckpointMark> extends UnboundedSource<T, C> {
    private static final int MAX_SPLITS = 10_000;
    private final UnboundedSource<T, C> source;
    private final long stopAt;

    StopAt(UnboundedSource<T, C> source, long stopAt) {
      this.source = source;
      this.stopAt = stopAt;
    }

    @Override
    public List<StopAt<T, C>> split(int desiredNumSplits, PipelineOptions options) throws Exception {
      // One split per partition, whatever the parallelism: a reader of several partitions, on Flink
      // with fewer source tasks than partitions, read one record of each and no more (2 of 1,000).
      List<StopAt<T, C>> splits = new ArrayList<>();
      for (UnboundedSource<T, C> split : source.split(Math.max(desiredNumSplits, MAX_SPLITS), options)) {
        splits.add(new StopAt<>(split, stopAt));
      }
      return splits;
    }

    @Override
    public UnboundedReader<T> createReader(PipelineOptions options, C checkpointMark) throws IOException {
      return new Reader(source.createReader(options, checkpointMark));
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
      private boolean ended = false;

      Reader(UnboundedReader<T> reader) {
        this.reader = reader;
      }

      @Override
      public boolean start() throws IOException {
        return reader.start(); // started even past the deadline: a record it read is still emitted
      }

      @Override
      public boolean advance() throws IOException {
        if (System.currentTimeMillis() >= stopAt) {
          ended = true;
          return false;
        }
        return reader.advance();
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
        return StopAt.this;
      }

      @Override
      public void close() throws IOException {
        reader.close();
      }
    }
  }
}
