"""AWS Lambda handlers. They import only the standard library, boto3 (from the runtime) and this package."""
