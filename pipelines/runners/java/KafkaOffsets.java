package local.iotplatform.kafka;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Where a consumer group stands on a topic: for each partition, its first and end offsets and the
 * group's committed offset (null: none yet), as one line of JSON on stdout:
 * {"0": {"beginning": 0, "end": 120, "committed": 100}, ...}. The relay asks it when it stops, with the
 * consumer settings it read with, to say what it left in Kafka. Arguments: bootstrap servers, topic,
 * then KEY=VALUE consumer settings (group.id among them).
 */
public class KafkaOffsets {
  public static void main(String[] args) {
    Properties config = new Properties();
    for (int i = 2; i < args.length; i++) {
      String[] setting = args[i].split("=", 2);
      config.put(setting[0], setting.length > 1 ? setting[1] : "");
    }
    config.put("bootstrap.servers", args[0]);
    config.put("enable.auto.commit", "false");
    config.put("allow.auto.create.topics", "false"); // asking must not create the topic
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(config, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> partitions = new ArrayList<>();
      List<PartitionInfo> infos = consumer.partitionsFor(args[1]);
      for (PartitionInfo info : infos == null ? new ArrayList<PartitionInfo>() : infos) {
        partitions.add(new TopicPartition(info.topic(), info.partition()));
      }
      Map<TopicPartition, Long> beginning = consumer.beginningOffsets(partitions);
      Map<TopicPartition, Long> end = consumer.endOffsets(partitions);
      Map<TopicPartition, OffsetAndMetadata> committed =
          consumer.committed(new HashSet<>(partitions));
      StringBuilder json = new StringBuilder("{");
      for (TopicPartition partition : partitions) {
        OffsetAndMetadata mark = committed.get(partition);
        json.append(json.length() > 1 ? ", " : "")
            .append('"').append(partition.partition()).append("\": {\"beginning\": ")
            .append(beginning.get(partition)).append(", \"end\": ").append(end.get(partition))
            .append(", \"committed\": ").append(mark == null ? "null" : String.valueOf(mark.offset()))
            .append('}');
      }
      System.out.println(json.append('}'));
    }
  }
}
