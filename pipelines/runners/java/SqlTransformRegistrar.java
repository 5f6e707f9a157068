package local.iotplatform.sql;

import java.util.Collections;
import java.util.Map;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.extensions.sql.SqlTransform;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PInput;
import org.apache.beam.sdk.values.Row;

/**
 * Python's SqlTransform (urn beam:external:java:sql:v1) for an expansion service assembled from Beam SQL
 * where Maven Central does not serve Beam's own SQL expansion service, whose registrar this stands for.
 * Only Beam SQL's default dialect (Calcite) is in that jar.
 */
public class SqlTransformRegistrar implements ExternalTransformRegistrar {
  public static final String URN = "beam:external:java:sql:v1";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Collections.singletonMap(URN, new Builder());
  }

  /** The payload Python sends: its fields are set by name. */
  public static class Configuration {
    private String query;
    private String dialect;

    public void setQuery(String query) {
      this.query = query;
    }

    public void setDialect(String dialect) {
      this.dialect = dialect;
    }
  }

  private static class Builder
      implements ExternalTransformBuilder<Configuration, PInput, PCollection<Row>> {
    @Override
    public PTransform<PInput, PCollection<Row>> buildExternal(Configuration configuration) {
      if (configuration.dialect != null && !configuration.dialect.equalsIgnoreCase("calcite")) {
        throw new IllegalArgumentException(
            "SQL dialect " + configuration.dialect + " is not in this expansion service: only calcite");
      }
      return SqlTransform.query(configuration.query);
    }
  }
}
