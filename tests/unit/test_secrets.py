import yaml

from dmf.core.secrets import MASK, is_secret_file, is_secret_name, mask_document, mask_text

CASSANDRA_YAML = """\
cluster_name: 'Test Cluster'
num_tokens: 16
initial_token: -9223372036854775808
authenticator: PasswordAuthenticator
server_encryption_options:
  internode_encryption: all
  keystore: conf/.keystore
  keystore_password: s3cret p4ss  # the real one
  truststore_password: "qu#oted"
  # keystore_password: old-secret
client_encryption_options:
  keystore_password_file: /etc/cassandra/ks.pw
  key_password: 'it''s'
transparent_data_encryption_options:
  key_provider:
    - class_name: org.apache.cassandra.security.JKSKeyProvider
      parameters:
        - keystore: conf/.keystore
          keystore_password: tde-secret
          key_password: tde-key
unset_password:
multiline_password: |
  line-one

  line-two

commitlog_directory: /var/lib/cassandra/commitlog
"""


def test_yaml_passwords_are_masked_in_place():
    masked = mask_text(CASSANDRA_YAML)
    for secret in ("s3cret", "p4ss", "qu#oted", "old-secret", "it''s", "tde-secret", "tde-key", "line-"):
        assert secret not in masked
    lines = masked.splitlines()
    assert f"  keystore_password: '{MASK}'  # the real one" in lines
    assert f'  truststore_password: "{MASK}"' in lines
    assert f"  # keystore_password: '{MASK}'" in lines
    assert f"          keystore_password: '{MASK}'" in lines
    assert "unset_password:" in lines  # unset stays unset
    assert f"multiline_password: '{MASK}'" in lines
    # Everything else is kept, line for line: topology, paths, comments.
    secret_lines = ("s3cret", "qu#oted", "old-secret", "it''s", "tde-", "multiline", "line-")
    assert [line for line in lines if line.strip() and MASK not in line] == \
        [line for line in CASSANDRA_YAML.splitlines() if line.strip() and not any(s in line for s in secret_lines)]
    assert "initial_token: -9223372036854775808" in lines and "num_tokens: 16" in lines
    assert "  keystore_password_file: /etc/cassandra/ks.pw" in lines
    assert masked.endswith("\ncommitlog_directory: /var/lib/cassandra/commitlog\n")
    parsed = yaml.safe_load(masked)  # still valid YAML, with the masks as values
    assert parsed["server_encryption_options"]["keystore_password"] == MASK
    assert parsed["multiline_password"] == MASK and parsed["unset_password"] is None
    assert parsed["transparent_data_encryption_options"]["key_provider"][0]["parameters"][0]["key_password"] == MASK


def test_masking_is_idempotent_and_keeps_line_endings():
    text = "keystore_password: a\r\nother: b\r\n"
    assert mask_text(text) == f"keystore_password: '{MASK}'\r\nother: b\r\n"
    assert mask_text(mask_text(CASSANDRA_YAML)) == mask_text(CASSANDRA_YAML)


def test_shell_properties_cql_and_xml_passwords_are_masked():
    env = ('JVM_OPTS="$JVM_OPTS -Djavax.net.ssl.keyStorePassword=cassandra"\n'
           '#JVM_OPTS="$JVM_OPTS -Dcom.sun.management.jmxremote.password.file=/etc/cassandra/jmxremote.password"\n')
    assert mask_text(env) == (f'JVM_OPTS="$JVM_OPTS -Djavax.net.ssl.keyStorePassword={MASK}"\n' + env.splitlines()[1]
                              + "\n")
    assert mask_text("truststore.password = abc def\n") == f"truststore.password = {MASK} def\n"
    assert mask_text("CREATE ROLE r WITH PASSWORD = 'x y' AND LOGIN = true;") == \
        f"CREATE ROLE r WITH PASSWORD = '{MASK}' AND LOGIN = true;"
    assert mask_text("<db><password>pw</password></db>") == f"<db><password>{MASK}</password></db>"


def test_command_lines_urls_and_private_keys_are_masked():
    assert mask_text("nodetool -u admin -pw hunter2 -h 127.0.0.1") == f"nodetool -u admin -pw {MASK} -h 127.0.0.1"
    assert mask_text("tool --password 'a b' --truststore-password=x -pwf /etc/pw") == \
        f"tool --password '{MASK}' --truststore-password={MASK} -pwf /etc/pw"
    assert mask_text("http://user:p%40ss@proxy:3128") == f"http://user:{MASK}@proxy:3128"
    assert mask_text("https://s3.example.com:9000/bucket") == "https://s3.example.com:9000/bucket"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    assert mask_text(f"x\n{key}\ny") == f"x\n{MASK}\ny"


def test_secret_names():
    for name in ("cql_password", "aws_secret_access_key", "aws_session_token", "ssh_private_key", "api_key",
                 "keyStorePassword", "passphrase", "client_secret", "jmx_password"):
        assert is_secret_name(name), name
    # Identifiers and paths that name a secret are not one: which key wrote a backup, where a key file is.
    for name in ("aws_access_key_id", "ssh_private_key_path", "keystore_password_file", "known_hosts",
                 "strict_host_key_checking", "cql_username", "jmx_username", "key_alias", "num_tokens",
                 "profile_name", ""):
        assert not is_secret_name(name), name


def test_block_documents_mask_secret_fields_and_secrets_in_strings():
    document = {
        "bucket": "b",
        "credentials": {"aws_access_key_id": "AKIA", "aws_secret_access_key": MASK, "aws_session_token": "TOKEN",
                        "region_name": None,
                        "aws_client_parameters": {"endpoint_url": "http://s3:9000",
                                                  "config": {"proxies": {"https": "http://u:pw@proxy"}}}},
        "hosts": [{"address": "10.0.0.1", "nodetool": "nodetool -u a -pw jmxpw"}],
        "cql_password": None,
        "ssh_private_key": {"unexpected": "shape"},
    }
    masked = mask_document(document)
    assert masked["credentials"]["aws_session_token"] == MASK
    assert masked["credentials"]["aws_access_key_id"] == "AKIA"
    assert masked["credentials"]["aws_client_parameters"]["config"]["proxies"]["https"] == f"http://u:{MASK}@proxy"
    assert masked["hosts"][0]["nodetool"] == f"nodetool -u a -pw {MASK}"
    assert masked["cql_password"] is None and masked["ssh_private_key"] == MASK
    assert masked["credentials"]["aws_client_parameters"]["endpoint_url"] == "http://s3:9000"
    assert document["credentials"]["aws_session_token"] == "TOKEN"  # a copy: the input is left alone


def test_credential_files_are_never_copied():
    for name in ("jmxremote.password", ".keystore", ".truststore", "server.jks", "node.p12", "node-key.pem",
                 "ssh.key", "cqlshrc", "aws_credentials"):
        assert is_secret_file(name), name
    for name in ("cassandra.yaml", "jmxremote.access", "cassandra-env.sh", "jvm-server.options",
                 "cassandra-rackdc.properties", "logback.xml"):
        assert not is_secret_file(name), name


# Real-looking node files that carry cloud and API credentials (issue 22.7): every such value is
# masked whatever the key's case, separator (`=`, `:`) or an `export` before it.
CASSANDRA_ENV_SH = """\
#!/bin/sh
export AWS_ACCESS_KEY_ID=AKIAEXAMPLEID
export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
export AWS_SESSION_TOKEN="FwoGZXIvYXdzEXAMPLETOKEN"
AZURE_CLIENT_SECRET='az-secret-value'
DATADOG_API_KEY=dd-api-key-value
JVM_OPTS="$JVM_OPTS -Dcom.sun.management.jmxremote.password.file=/etc/cassandra/jmxremote.password"
JVM_OPTS="$JVM_OPTS -Dcassandra.ring_delay_ms=1000"
"""

BACKUP_AGENT_YAML = """\
storage:
  aws_access_key_id: AKIAEXAMPLEID
  aws_secret_access_key: yaml-secret-key
  AWS_SESSION_TOKEN: yaml-session-token
  Api_Token: yaml-api-token
  gcp_credentials: '{"type": "service_account"}'
  private_key: yaml-private-key
  api_key: "yaml-api-key"
  credentials_file: /etc/backup/creds.json
initial_token: -9223372036854775808
num_tokens: 16
credentials_validity: 2000ms
credentials_update_interval: 1000ms
"""

AGENT_PROPERTIES = """\
s3.endpoint=http://127.0.0.1:9000
s3.secretKey=props-secret-key
s3.credential = props-credential
jclouds.credential=props-jclouds
auth.token: props-token
metrics.apiKey=props-api-key
"""


def test_cloud_and_api_credentials_are_masked_in_node_files():
    secrets = ("wJalrXUtnFEMI", "FwoGZXIvYXdz", "az-secret-value", "dd-api-key-value", "yaml-secret-key",
               "yaml-session-token", "yaml-api-token", "service_account", "yaml-private-key", "yaml-api-key",
               "props-secret-key", "props-credential", "props-jclouds", "props-token", "props-api-key")
    masked = {text: mask_text(text) for text in (CASSANDRA_ENV_SH, BACKUP_AGENT_YAML, AGENT_PROPERTIES)}
    for original, text in masked.items():
        for secret in secrets:
            assert secret not in text, (secret, text)
        assert mask_text(text) == text  # idempotent
        assert len(text.splitlines()) == len(original.splitlines())  # layout kept
    env = masked[CASSANDRA_ENV_SH].splitlines()
    assert f"export AWS_SECRET_ACCESS_KEY={MASK}" in env
    assert f'export AWS_SESSION_TOKEN="{MASK}"' in env
    # Identifiers, paths naming a secret, topology and settings that only mention a word are kept.
    assert "export AWS_ACCESS_KEY_ID=AKIAEXAMPLEID" in env
    assert CASSANDRA_ENV_SH.splitlines()[6] in env
    agent = yaml.safe_load(masked[BACKUP_AGENT_YAML])
    assert agent["storage"]["aws_secret_access_key"] == MASK and agent["storage"]["Api_Token"] == MASK
    assert agent["storage"]["aws_access_key_id"] == "AKIAEXAMPLEID"
    assert agent["storage"]["credentials_file"] == "/etc/backup/creds.json"
    assert agent["initial_token"] == -9223372036854775808 and agent["num_tokens"] == 16
    assert agent["credentials_validity"] == "2000ms" and agent["credentials_update_interval"] == "1000ms"
    assert "s3.endpoint=http://127.0.0.1:9000" in masked[AGENT_PROPERTIES].splitlines()
