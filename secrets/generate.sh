#!/bin/sh
# Writes the secrets docker-compose.yml mounts (compose `secrets:`), each a random value, once: an
# existing file is kept. They never go into git (.gitignore) or into the compose file.
#   postgres_password           PostgreSQL's password for "ledger" (the ledger reads it as LEDGER_DATABASE_PASSWORD)
#   ledger_kafka_sasl_password  SASL/PLAIN password of the Kafka user "ledger" (LEDGER_KAFKA_SASL_PASSWORD)
#   ledger_app_password         PostgreSQL's password for "ledger_app", the role the ledger logs in as
#   ledger_member_id_hmac_key   key of the HMAC that replaces SSNs (LEDGER_MEMBER_ID_HMAC_KEY); keep it
#   ledger_anchor_hmac_key      key that signs the archive's checkpoints (LEDGER_ANCHOR_HMAC_KEY); keep it
#   kafka_jaas.conf             the brokers' JAAS file, listing the user "ledger" with that password
# The directory is private to you (0700); the files are readable (0644) because the containers read
# them as their own users through bind mounts.
set -eu
cd "$(dirname "$0")"
chmod 0700 .
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
for name in postgres_password ledger_app_password ledger_kafka_sasl_password ledger_member_id_hmac_key ledger_anchor_hmac_key; do
  if [ ! -s "$name" ]; then
    random > "$name"
    echo "wrote secrets/$name"
  fi
done
password=$(cat ledger_kafka_sasl_password)
cat > kafka_jaas.conf <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  user_ledger="$password";
};
JAAS
chmod 0644 postgres_password ledger_app_password ledger_kafka_sasl_password ledger_member_id_hmac_key \
  ledger_anchor_hmac_key kafka_jaas.conf
echo "wrote secrets/kafka_jaas.conf"
