/*
 * The benchmark client: one libnfs (sync API) client, the same for every server measured.
 * Usage: nfsbench URL TEST [ARG]
 *   URL   nfs://host/export?nfsport=N&mountport=M
 *   TEST  write BYTES | read BYTES | create FILES | readback FILES | list DIR
 * Prints one line: "<test> <seconds> <units>" (units: bytes or files or entries).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nfsc/libnfs.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(struct nfs_context *nfs, const char *what) {
    fprintf(stderr, "nfsbench: %s: %s\n", what, nfs ? nfs_get_error(nfs) : "");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: nfsbench URL TEST ARG\n");
        return 2;
    }
    struct nfs_context *nfs = nfs_init_context();
    if (!nfs) die(NULL, "init");
    struct nfs_url *url = nfs_parse_url_dir(nfs, argv[1]);
    if (!url) die(nfs, "parse url");
    if (nfs_mount(nfs, url->server, url->path) != 0) die(nfs, "mount");
    const char *test = argv[2];
    uint64_t arg = strtoull(argv[3], NULL, 10);
    const size_t chunk = 1024 * 1024;
    char *buf = malloc(chunk);
    for (size_t i = 0; i < chunk; i++) buf[i] = (char)(i * 131);
    double start = now();
    uint64_t units = 0;

    if (strcmp(test, "write") == 0) {
        struct nfsfh *fh;
        if (nfs_open(nfs, "/bench.bin", O_CREAT | O_WRONLY | O_TRUNC, &fh) != 0) die(nfs, "open");
        for (uint64_t off = 0; off < arg; off += chunk) {
            if (nfs_pwrite(nfs, fh, off, chunk, buf) != (int)chunk) die(nfs, "pwrite");
        }
        if (nfs_fsync(nfs, fh) != 0) die(nfs, "fsync");
        nfs_close(nfs, fh);
        units = arg;
    } else if (strcmp(test, "read") == 0) {
        struct nfsfh *fh;
        if (nfs_open(nfs, "/bench.bin", O_RDONLY, &fh) != 0) die(nfs, "open");
        for (uint64_t off = 0; off < arg;) {
            int n = nfs_pread(nfs, fh, off, chunk, buf);
            if (n <= 0) die(nfs, "pread");
            off += n;
        }
        nfs_close(nfs, fh);
        units = arg;
    } else if (strcmp(test, "create") == 0) {
        nfs_mkdir(nfs, "/small");
        char path[64];
        for (uint64_t i = 0; i < arg; i++) {
            struct nfsfh *fh;
            snprintf(path, sizeof path, "/small/f%06" PRIu64, i);
            if (nfs_creat(nfs, path, 0644, &fh) != 0) die(nfs, "creat");
            if (nfs_pwrite(nfs, fh, 0, 4096, buf) != 4096) die(nfs, "pwrite");
            nfs_close(nfs, fh);
        }
        units = arg;
    } else if (strcmp(test, "readback") == 0) {
        char path[64];
        for (uint64_t i = 0; i < arg; i++) {
            struct nfsfh *fh;
            snprintf(path, sizeof path, "/small/f%06" PRIu64, i);
            if (nfs_open(nfs, path, O_RDONLY, &fh) != 0) die(nfs, "open");
            if (nfs_pread(nfs, fh, 0, 4096, buf) != 4096) die(nfs, "pread");
            nfs_close(nfs, fh);
        }
        units = arg;
    } else if (strcmp(test, "list") == 0) {
        struct nfsdir *dir;
        if (nfs_opendir(nfs, argv[3], &dir) != 0) die(nfs, "opendir");
        while (nfs_readdir(nfs, dir) != NULL) units++;
        nfs_closedir(nfs, dir);
    } else {
        fprintf(stderr, "unknown test %s\n", test);
        return 2;
    }
    double took = now() - start;
    printf("%s %.6f %" PRIu64 "\n", test, took, units);
    nfs_destroy_url(url);
    nfs_destroy_context(nfs);
    return 0;
}
