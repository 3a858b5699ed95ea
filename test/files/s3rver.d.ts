// s3rver (the fake S3 of the S3 driver tests) ships no types.
declare module 's3rver';
