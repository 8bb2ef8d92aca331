# Cluster DNS of the local cluster's real node: CoreDNS built from the Go module proxy with
# the plugins of hack/coredns/main.go (statically linked, CGO off). Nothing else is in the image.
# Context: a directory holding the `coredns` binary (hack/build-images.sh prepares it).
FROM scratch
COPY coredns /coredns
USER 65532:65532
ENTRYPOINT ["/coredns"]
