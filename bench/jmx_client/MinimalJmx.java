// Bench only (bench/nodetool_jvm.py): what a JMX client that loads only the JDK's classes costs,
// against nodetool's JVM. `MinimalJmx <port> flush <ks> <table>` or `... snapshot <tag> <ks.table>`.
import java.util.HashMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class MinimalJmx {
    public static void main(String[] a) throws Exception {
        JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://127.0.0.1:" + a[0] + "/jmxrmi");
        try (JMXConnector connector = JMXConnectorFactory.connect(url, new HashMap<String, Object>())) {
            MBeanServerConnection server = connector.getMBeanServerConnection();
            ObjectName ss = new ObjectName("org.apache.cassandra.db:type=StorageService");
            if (a[1].equals("flush")) {
                server.invoke(ss, "forceKeyspaceFlush", new Object[]{a[2], new String[]{a[3]}},
                              new String[]{"java.lang.String", "[Ljava.lang.String;"});
            } else {
                server.invoke(ss, "takeSnapshot", new Object[]{a[2], new HashMap<String, String>(), new String[]{a[3]}},
                              new String[]{"java.lang.String", "java.util.Map", "[Ljava.lang.String;"});
            }
        }
    }
}
