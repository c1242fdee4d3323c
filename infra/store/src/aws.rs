//! DynamoDB + SQS adapters (being written).
