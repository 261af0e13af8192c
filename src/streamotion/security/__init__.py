"""Least privilege on the data path: the Kafka identity and ACLs of each pipeline component
(:mod:`streamotion.security.acls`), computed once for the operator's KafkaUsers and for the ACLs
``streamotion dev kafka --secure`` applies on the local broker."""
