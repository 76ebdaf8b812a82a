/*
 * The benchmark client: one libnfs client, the same for every server measured.
 * Usage: nfsbench URL TEST ARG...
 *   URL   nfs://host/export?nfsport=N&mountport=M
 *   TEST  one request at a time (libnfs sync API):
 *           write BYTES | read BYTES | create FILES [DIR] | readback FILES [DIR] | list DIR
 *         many requests in flight (libnfs async API, CONNS connections, DEPTH each):
 *           pwrite CONNS DEPTH BYTES      1 MiB writes at distinct offsets of /bench.bin, then fsync
 *           pread CONNS DEPTH BYTES       1 MiB reads of /bench.bin
 *           preadback CONNS DEPTH FILES   open + 4 KiB read + close of /small/fNNNNNN
 * Prints one line: "<test> <seconds> <units>" (units: bytes or files or entries).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nfsc/libnfs.h>

#define CHUNK (1024 * 1024)
#define MAX_CONNS 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(struct nfs_context *nfs, const char *what) {
    fprintf(stderr, "nfsbench: %s: %s\n", what, nfs ? nfs_get_error(nfs) : "");
    exit(1);
}

static struct nfs_context *mount_url(const char *text, struct nfs_url **out) {
    struct nfs_context *nfs = nfs_init_context();
    if (!nfs) die(NULL, "init");
    struct nfs_url *url = nfs_parse_url_dir(nfs, text);
    if (!url) die(nfs, "parse url");
    if (nfs_mount(nfs, url->server, url->path) != 0) die(nfs, "mount");
    *out = url;
    return nfs;
}

/* ---- many requests in flight ---- */

struct pipeline {
    struct nfs_context *nfs[MAX_CONNS];
    struct nfsfh *fh[MAX_CONNS];
    int conns;
    uint64_t next;       /* next offset (or file index) to hand out */
    uint64_t limit;      /* total bytes (or files) */
    uint64_t done;       /* bytes (or files) completed */
    int in_flight;
    char *buf;
};

/* One request slot: which connection it runs on, and where a small-file read is. */
struct slot {
    struct pipeline *p;
    int conn;
    struct nfsfh *small;
    char path[64];
};

static void issue_big(struct slot *s, int write);

static void big_done(int err, struct nfs_context *nfs, void *data, void *private_data, int write) {
    (void)data;
    struct slot *s = private_data;
    if (err < 0) die(nfs, write ? "pwrite" : "pread");
    s->p->done += (uint64_t)err;
    s->p->in_flight--;
    issue_big(s, write);
}
static void write_done(int err, struct nfs_context *nfs, void *data, void *pd) { big_done(err, nfs, data, pd, 1); }
static void read_done(int err, struct nfs_context *nfs, void *data, void *pd) { big_done(err, nfs, data, pd, 0); }

static void issue_big(struct slot *s, int write) {
    struct pipeline *p = s->p;
    if (p->next >= p->limit) return;
    uint64_t off = p->next;
    uint64_t count = p->limit - off < CHUNK ? p->limit - off : CHUNK;
    p->next += count;
    p->in_flight++;
    int rc = write ? nfs_pwrite_async(p->nfs[s->conn], p->fh[s->conn], off, count, p->buf, write_done, s)
                   : nfs_pread_async(p->nfs[s->conn], p->fh[s->conn], off, count, read_done, s);
    if (rc != 0) die(p->nfs[s->conn], "queue");
}

static void issue_small(struct slot *s);

static void small_closed(int err, struct nfs_context *nfs, void *data, void *private_data) {
    (void)data;
    struct slot *s = private_data;
    if (err < 0) die(nfs, "close");
    s->p->done++;
    s->p->in_flight--;
    issue_small(s);
}

static void small_read(int err, struct nfs_context *nfs, void *data, void *private_data) {
    (void)data;
    struct slot *s = private_data;
    if (err != 4096) die(nfs, "pread small");
    if (nfs_close_async(nfs, s->small, small_closed, s) != 0) die(nfs, "queue close");
}

static void small_opened(int err, struct nfs_context *nfs, void *data, void *private_data) {
    struct slot *s = private_data;
    if (err < 0) die(nfs, "open small");
    s->small = data;
    if (nfs_pread_async(nfs, s->small, 0, 4096, small_read, s) != 0) die(nfs, "queue pread");
}

static void issue_small(struct slot *s) {
    struct pipeline *p = s->p;
    if (p->next >= p->limit) return;
    snprintf(s->path, sizeof s->path, "/small/f%06" PRIu64, p->next++);
    p->in_flight++;
    if (nfs_open_async(p->nfs[s->conn], s->path, O_RDONLY, small_opened, s) != 0) die(p->nfs[s->conn], "queue open");
}

/* Drives every connection until nothing is in flight. */
static void run_until_idle(struct pipeline *p) {
    struct pollfd fds[MAX_CONNS];
    while (p->in_flight > 0) {
        for (int c = 0; c < p->conns; c++) {
            fds[c].fd = nfs_get_fd(p->nfs[c]);
            fds[c].events = nfs_which_events(p->nfs[c]);
            fds[c].revents = 0;
        }
        if (poll(fds, p->conns, 1000) < 0) die(NULL, "poll");
        for (int c = 0; c < p->conns; c++) {
            if (nfs_service(p->nfs[c], fds[c].revents) < 0) die(p->nfs[c], "service");
        }
    }
}

static uint64_t pipelined(const char *url_text, const char *test, int conns, int depth, uint64_t limit) {
    if (conns < 1 || conns > MAX_CONNS || depth < 1) die(NULL, "CONNS must be 1..64 and DEPTH at least 1");
    struct pipeline p = {.conns = conns, .limit = limit};
    struct nfs_url *urls[MAX_CONNS];
    p.buf = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++) p.buf[i] = (char)(i * 131);
    int write = strcmp(test, "pwrite") == 0;
    int small = strcmp(test, "preadback") == 0;
    for (int c = 0; c < conns; c++) {
        p.nfs[c] = mount_url(url_text, &urls[c]);
        if (!small) {
            int flags = write ? O_WRONLY | O_CREAT : O_RDONLY;
            /* Only the first connection truncates: the others open what it created. */
            if (write && c == 0) flags |= O_TRUNC;
            if (nfs_open(p.nfs[c], "/bench.bin", flags, &p.fh[c]) != 0) die(p.nfs[c], "open");
        }
    }
    struct slot *slots = calloc((size_t)conns * depth, sizeof *slots);
    double start = now();
    for (int c = 0; c < conns; c++) {
        for (int d = 0; d < depth; d++) {
            struct slot *s = &slots[c * depth + d];
            s->p = &p;
            s->conn = c;
            if (small) issue_small(s); else issue_big(s, write);
        }
    }
    run_until_idle(&p);
    if (write) {
        for (int c = 0; c < conns; c++) {
            if (nfs_fsync(p.nfs[c], p.fh[c]) != 0) die(p.nfs[c], "fsync");
        }
    }
    double took = now() - start;
    for (int c = 0; c < conns; c++) {
        if (!small) nfs_close(p.nfs[c], p.fh[c]);
        nfs_destroy_url(urls[c]);
        nfs_destroy_context(p.nfs[c]);
    }
    if (p.done != limit) {
        fprintf(stderr, "nfsbench: %s moved %" PRIu64 " of %" PRIu64 "\n", test, p.done, limit);
        exit(1);
    }
    printf("%s %.6f %" PRIu64 "\n", test, took, p.done);
    return p.done;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: nfsbench URL TEST ARG...\n");
        return 2;
    }
    const char *test = argv[2];
    if (strcmp(test, "pwrite") == 0 || strcmp(test, "pread") == 0 || strcmp(test, "preadback") == 0) {
        if (argc < 6) {
            fprintf(stderr, "usage: nfsbench URL %s CONNS DEPTH COUNT\n", test);
            return 2;
        }
        pipelined(argv[1], test, atoi(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10));
        return 0;
    }
    struct nfs_url *url;
    struct nfs_context *nfs = mount_url(argv[1], &url);
    uint64_t arg = strtoull(argv[3], NULL, 10);
    char *buf = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++) buf[i] = (char)(i * 131);
    double start = now();
    uint64_t units = 0;

    if (strcmp(test, "write") == 0) {
        struct nfsfh *fh;
        if (nfs_open(nfs, "/bench.bin", O_CREAT | O_WRONLY | O_TRUNC, &fh) != 0) die(nfs, "open");
        for (uint64_t off = 0; off < arg; off += CHUNK) {
            if (nfs_pwrite(nfs, fh, off, CHUNK, buf) != CHUNK) die(nfs, "pwrite");
        }
        if (nfs_fsync(nfs, fh) != 0) die(nfs, "fsync");
        nfs_close(nfs, fh);
        units = arg;
    } else if (strcmp(test, "read") == 0) {
        struct nfsfh *fh;
        if (nfs_open(nfs, "/bench.bin", O_RDONLY, &fh) != 0) die(nfs, "open");
        for (uint64_t off = 0; off < arg;) {
            int n = nfs_pread(nfs, fh, off, CHUNK, buf);
            if (n <= 0) die(nfs, "pread");
            off += n;
        }
        nfs_close(nfs, fh);
        units = arg;
    } else if (strcmp(test, "create") == 0) {
        const char *dir = argc > 4 ? argv[4] : "/small";
        nfs_mkdir(nfs, dir);
        char path[256];
        for (uint64_t i = 0; i < arg; i++) {
            struct nfsfh *fh;
            snprintf(path, sizeof path, "%s/f%06" PRIu64, dir, i);
            if (nfs_creat(nfs, path, 0644, &fh) != 0) die(nfs, "creat");
            if (nfs_pwrite(nfs, fh, 0, 4096, buf) != 4096) die(nfs, "pwrite");
            nfs_close(nfs, fh);
        }
        units = arg;
    } else if (strcmp(test, "readback") == 0) {
        const char *dir = argc > 4 ? argv[4] : "/small";
        char path[256];
        for (uint64_t i = 0; i < arg; i++) {
            struct nfsfh *fh;
            snprintf(path, sizeof path, "%s/f%06" PRIu64, dir, i);
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
