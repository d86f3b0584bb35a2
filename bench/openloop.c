/* openloop: an open-loop HTTP/1.1 load generator (one thread, epoll, non-blocking sockets).
 *
 * Why open loop: closed-loop tools (wrk, hey) send the next request only when a connection is
 * free, so a slow server slows the offered load and its queueing never shows in the latency
 * ("coordinated omission"). Here arrivals follow a fixed schedule drawn from a seeded Poisson
 * process, and each latency runs from the request's INTENDED send time to the last byte of its
 * response: time spent waiting for a free connection or in the server's queue counts.
 *
 *   cc -O2 -o openloop openloop.c -lm
 *   openloop --port 8080 --rate 20000 --duration 5 [--host 127.0.0.1] [--path /] [--method GET]
 *            [--body-file F] [--header 'Name: value']... [--warmup 1]
 *            [--pattern poisson|onoff --on 1 --off 1] [--connections 512] [--timeout 2]
 *            [--seed 1]
 *
 * --pattern onoff alternates --on seconds of Poisson arrivals at rate*(on+off)/on with --off
 * seconds of none (mean rate: --rate); the cycle starts with the measured window, the warm-up
 * is plain Poisson at --rate. Requests whose intended time falls in the warm-up are sent but
 * not measured. --timeout counts from when a request is handed to a connection (time spent
 * waiting for one shows in the latency, not as a timeout). Latency covers every answer read to
 * its end, whatever its status. Prints one JSON object on stdout (report()); bad arguments
 * exit 2.
 *
 * The hot path allocates nothing: connections live in one array, the request bytes are built
 * once, responses are parsed in place by a small state machine (Content-Length, chunked, or
 * until close), and latencies go into log-linear histograms (256 buckets per power of two:
 * under 0.4% error).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef int64_t ns_t;
#define NS_PER_S 1000000000LL
#define SPIN_NS 50000 /* closer than this to the next send: busy-poll instead of sleeping */
#define BURST 64      /* most arrivals handled before looking at sockets again */
#define LINE_MAX_ 256 /* longer status/header/chunk lines are truncated (we need their heads) */

static ns_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ns_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static ns_t seconds(double s) { return (ns_t)(s * NS_PER_S); }

/* ---- options ------------------------------------------------------------------------------ */

static struct {
    const char *host, *port, *path, *method, *body_file;
    char headers[8192]; /* user headers, each "Name: value\r\n" */
    size_t headers_len;
    bool has_host;
    double rate, duration, warmup, on, off, timeout;
    bool onoff, head;
    int connections;
    uint64_t seed;
} opt = {.host = "127.0.0.1", .path = "/", .method = "GET", .warmup = 1, .on = 1, .off = 1,
         .timeout = 2, .connections = 512, .seed = 1};

static void usage_exit(const char *why)
{
    fprintf(stderr, "openloop: %s\n(usage: see the comment at the top of bench/openloop.c)\n",
            why);
    exit(2);
}

static double positive(const char *name, const char *text, bool zero_ok)
{
    char *end;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !isfinite(v) || v < 0 || (v == 0 && !zero_ok)) {
        fprintf(stderr, "openloop: --%s wants a %s number, got '%s'\n", name,
                zero_ok ? "non-negative" : "positive", text);
        exit(2);
    }
    return v;
}

static void add_header(const char *h)
{
    const char *colon = strchr(h, ':');
    if (colon == NULL || colon == h)
        usage_exit("--header wants 'Name: value'");
    size_t name = (size_t)(colon - h);
    if (name == 14 && strncasecmp(h, "content-length", 14) == 0)
        return; /* we write our own, from the body */
    if (name == 4 && strncasecmp(h, "host", 4) == 0)
        opt.has_host = true;
    int n = snprintf(opt.headers + opt.headers_len, sizeof opt.headers - opt.headers_len,
                     "%s\r\n", h);
    if (n < 0 || (size_t)n >= sizeof opt.headers - opt.headers_len)
        usage_exit("--header: too many headers");
    opt.headers_len += (size_t)n;
}

static void parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        {"host", 1, 0, 'H'},    {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
        {"method", 1, 0, 'm'},  {"body-file", 1, 0, 'b'}, {"header", 1, 0, 'h'},
        {"rate", 1, 0, 'r'},    {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'},
        {"pattern", 1, 0, 'k'}, {"on", 1, 0, 'n'},       {"off", 1, 0, 'f'},
        {"connections", 1, 0, 'c'}, {"timeout", 1, 0, 't'}, {"seed", 1, 0, 's'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = optarg; break;
        case 'P': opt.path = optarg; break;
        case 'm': opt.method = optarg; break;
        case 'b': opt.body_file = optarg; break;
        case 'h': add_header(optarg); break;
        case 'r': opt.rate = positive("rate", optarg, false); break;
        case 'd': opt.duration = positive("duration", optarg, false); break;
        case 'w': opt.warmup = positive("warmup", optarg, true); break;
        case 'n': opt.on = positive("on", optarg, false); break;
        case 'f': opt.off = positive("off", optarg, true); break;
        case 't': opt.timeout = positive("timeout", optarg, false); break;
        case 's': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'c':
            opt.connections = (int)fmin(positive("connections", optarg, false), 1e6);
            break;
        case 'k':
            if (strcmp(optarg, "onoff") == 0) opt.onoff = true;
            else if (strcmp(optarg, "poisson") != 0) usage_exit("--pattern is poisson or onoff");
            break;
        default: usage_exit("unknown option");
        }
    }
    if (optind != argc) usage_exit("unexpected argument");
    if (opt.port == NULL || opt.rate == 0 || opt.duration == 0 || opt.connections < 1)
        usage_exit("--port, --rate and --duration are required");
    opt.head = strcasecmp(opt.method, "HEAD") == 0;
}

/* ---- the request, built once --------------------------------------------------------------- */

static char *request;
static size_t request_len;

static void build_request(void)
{
    char *body = NULL;
    size_t body_len = 0;
    if (opt.body_file != NULL) {
        FILE *f = fopen(opt.body_file, "rb");
        if (f == NULL || fseek(f, 0, SEEK_END) != 0) usage_exit("cannot read --body-file");
        long size = ftell(f);
        rewind(f);
        body = malloc((size_t)size + 1);
        if (size < 0 || body == NULL || fread(body, 1, (size_t)size, f) != (size_t)size)
            usage_exit("cannot read --body-file");
        fclose(f);
        body_len = (size_t)size;
    }
    bool length = body_len > 0 || strcasecmp(opt.method, "POST") == 0 ||
                  strcasecmp(opt.method, "PUT") == 0 || strcasecmp(opt.method, "PATCH") == 0;
    size_t cap = strlen(opt.method) + strlen(opt.path) + strlen(opt.host) + strlen(opt.port) +
                 opt.headers_len + body_len + 128;
    request = malloc(cap);
    int n = snprintf(request, cap, "%s %s HTTP/1.1\r\n", opt.method, opt.path);
    if (!opt.has_host)
        n += snprintf(request + n, cap - (size_t)n, "Host: %s:%s\r\n", opt.host, opt.port);
    memcpy(request + n, opt.headers, opt.headers_len);
    n += (int)opt.headers_len;
    if (length) n += snprintf(request + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(request + n, cap - (size_t)n, "\r\n");
    if (body_len) memcpy(request + n, body, body_len);
    request_len = (size_t)n + body_len;
    free(body);
}

/* ---- histogram: log-linear, exact below 256 ns ------------------------------------------- */

#define SUB_BITS 8
#define SUB (1 << SUB_BITS)
#define NBUCKETS (SUB + 40 * SUB) /* up to 2^48 ns */

struct histogram {
    uint64_t counts[NBUCKETS];
    uint64_t n;
    double sum;
    ns_t max;
};

static void hist_add(struct histogram *h, ns_t v)
{
    uint64_t x = v < 0 ? 0 : (uint64_t)v;
    int i = (int)x;
    if (x >= SUB) {
        int m = 63 - __builtin_clzll(x);
        i = SUB + (m - SUB_BITS) * SUB + (int)((x >> (m - SUB_BITS)) & (SUB - 1));
        if (i >= NBUCKETS) i = NBUCKETS - 1;
    }
    h->counts[i]++;
    h->n++;
    h->sum += (double)x;
    if (v > h->max) h->max = v;
}

static double hist_ms(const struct histogram *h, double q) /* the q-quantile, in ms */
{
    if (h->n == 0) return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (rank < 1) rank = 1;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen < rank) continue;
        double mid = i;
        if (i >= SUB) { /* the middle of the bucket */
            int shift = (i - SUB) / SUB;
            double low = (double)((uint64_t)(SUB + (i - SUB) % SUB) << shift);
            mid = low + ((double)(1ULL << shift) - 1) / 2;
        }
        return fmin(mid, (double)h->max) / 1e6;
    }
    return (double)h->max / 1e6;
}

/* ---- the arrival schedule: seeded, so a seed gives the same intended times ----------------- */

static struct {
    uint64_t rng;
    double t, u; /* t: seconds since start (warm-up); u: "on" seconds into the measured window */
    bool warming;
} sched;

static double exp_draw(double rate) /* splitmix64 -> uniform in (0, 1] -> exponential */
{
    uint64_t z = (sched.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return -log((double)((z >> 11) + 1) * 0x1.0p-53) / rate;
}

static double next_arrival(void) /* seconds since start */
{
    if (sched.warming) {
        sched.t += exp_draw(opt.rate);
        if (sched.t < opt.warmup) return sched.t;
        sched.warming = false; /* memoryless: the measured window starts afresh */
    }
    if (!opt.onoff) {
        sched.u += exp_draw(opt.rate);
        return opt.warmup + sched.u;
    }
    sched.u += exp_draw(opt.rate * (opt.on + opt.off) / opt.on);
    double period = floor(sched.u / opt.on);
    return opt.warmup + period * (opt.on + opt.off) + (sched.u - period * opt.on);
}

/* ---- connections ---------------------------------------------------------------------------- */

enum state { FREE, CONNECTING, BUSY, IDLE };
enum parse { P_STATUS, P_HEADER, P_BODY, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER,
             P_UNTIL_EOF };
enum error { E_CONNECT, E_RESET, E_MALFORMED };

struct conn {
    int fd;
    enum state state;
    uint32_t events;       /* what epoll watches */
    int idle_at;           /* index in the idle stack */
    ns_t intended, deadline;
    bool measured;
    size_t written;
    struct conn *prev, *next; /* the busy list, in dispatch order = deadline order */
    /* response parser */
    enum parse ps;
    int status;
    bool http10, chunked, close, keep_alive;
    int64_t length, remaining;
    int line_len;
    char line[LINE_MAX_];
};

static struct conn *conns, **idle, **free_slots, *busy_head, *busy_tail;
static int n_idle, n_free, n_open;
static struct pending { ns_t at; bool measured; } *backlog; /* a ring */
static size_t backlog_cap, backlog_head, backlog_len;
static int epfd;
static struct sockaddr_storage addr;
static socklen_t addr_len;
static ns_t timeout_ns, measure_from, measure_end;

static struct {
    uint64_t scheduled, sent, warmup_sent, completed, ok, timeouts, unsent, opened;
    uint64_t ok_in_window; /* 2xx whose last byte came inside the measured window */
    uint64_t errors[3];
    uint64_t status[600];
    struct histogram latency, lag;
} stats;

static void watch(struct conn *c, uint32_t events)
{
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void busy_append(struct conn *c)
{
    c->prev = busy_tail;
    c->next = NULL;
    if (busy_tail) busy_tail->next = c;
    else busy_head = c;
    busy_tail = c;
}

static void busy_remove(struct conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else busy_head = c->next;
    if (c->next) c->next->prev = c->prev;
    else busy_tail = c->prev;
}

static void close_conn(struct conn *c, bool reset)
{
    if (c->state == CONNECTING || c->state == BUSY) busy_remove(c);
    if (c->state == IDLE) { /* swap-remove from the idle stack */
        idle[c->idle_at] = idle[--n_idle];
        idle[c->idle_at]->idle_at = c->idle_at;
    }
    if (reset) { /* an abortive close: no TIME_WAIT, and the server sees the request end */
        struct linger l = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd);
    c->state = FREE;
    free_slots[n_free++] = c;
    n_open--;
}

static void fail(struct conn *c, enum error kind)
{
    if (c->measured) stats.errors[kind]++;
    close_conn(c, true);
}

static void try_write(struct conn *c)
{
    while (c->written < request_len) {
        ssize_t n = send(c->fd, request + c->written, request_len - c->written, MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            watch(c, EPOLLIN | EPOLLRDHUP | EPOLLOUT);
            return;
        } else {
            fail(c, E_RESET);
            return;
        }
    }
    watch(c, EPOLLIN | EPOLLRDHUP);
}

static void begin(struct conn *c, ns_t intended, bool measured, ns_t now)
{
    c->intended = intended;
    c->measured = measured;
    c->deadline = now + timeout_ns;
    c->written = 0;
    c->ps = P_STATUS;
    c->line_len = 0;
    busy_append(c);
    if (measured) stats.sent++;
    else stats.warmup_sent++;
    if (c->state == IDLE) {
        c->state = BUSY;
        try_write(c);
    }
}

static struct conn *open_conn(void) /* NULL: the connect failed at once */
{
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, addr_len) != 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    struct conn *c = free_slots[--n_free];
    c->fd = fd;
    c->state = CONNECTING;
    c->events = EPOLLIN | EPOLLRDHUP | EPOLLOUT;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    n_open++;
    stats.opened++;
    return c;
}

/* An idle connection, else a new one, else the FIFO backlog. */
static void dispatch(ns_t intended, bool measured, ns_t now)
{
    if (n_idle > 0) {
        begin(idle[--n_idle], intended, measured, now);
    } else if (n_open < opt.connections) {
        struct conn *c = open_conn();
        if (c != NULL) {
            begin(c, intended, measured, now);
        } else {
            if (measured) stats.sent++, stats.errors[E_CONNECT]++;
            else stats.warmup_sent++;
        }
    } else {
        if (backlog_len == backlog_cap) { /* grow (rare: the server is far behind) */
            size_t cap = backlog_cap ? 2 * backlog_cap : 4096;
            struct pending *grown = malloc(cap * sizeof *grown);
            if (grown == NULL) { perror("openloop: backlog"); exit(1); }
            for (size_t i = 0; i < backlog_len; i++)
                grown[i] = backlog[(backlog_head + i) % backlog_cap];
            free(backlog);
            backlog = grown;
            backlog_cap = cap;
            backlog_head = 0;
        }
        size_t at = (backlog_head + backlog_len++) % backlog_cap;
        backlog[at].at = intended;
        backlog[at].measured = measured;
    }
}

static void refill(ns_t now) /* freed connections take the backlog, oldest first */
{
    while (backlog_len > 0 && (n_idle > 0 || n_open < opt.connections)) {
        ns_t at = backlog[backlog_head].at;
        bool measured = backlog[backlog_head].measured;
        backlog_head = (backlog_head + 1) % backlog_cap;
        backlog_len--;
        dispatch(at, measured, now);
    }
}

static void finish(struct conn *c, ns_t now)
{
    bool ok = c->status >= 200 && c->status < 300;
    if (ok && now >= measure_from && now < measure_end) stats.ok_in_window++;
    if (c->measured) {
        stats.completed++;
        hist_add(&stats.latency, now - c->intended);
        if (ok) stats.ok++;
        else stats.status[c->status]++;
    }
    if (c->close) {
        close_conn(c, false);
        return;
    }
    busy_remove(c);
    c->state = IDLE;
    c->idle_at = n_idle;
    idle[n_idle++] = c;
}

/* ---- response parsing ------------------------------------------------------------------------ */

enum { LINE_OK, LINE_DONE, LINE_BAD };

static bool header_is(const char *line, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(line, name, name_len) == 0;
}

static int on_line(struct conn *c)
{
    char *line = c->line;
    size_t len = (size_t)c->line_len;
    switch (c->ps) {
    case P_STATUS:
        if (len == 0) return LINE_OK; /* tolerated before a status line */
        if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' ||
            line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' ||
            line[11] < '0' || line[11] > '9')
            return LINE_BAD;
        c->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        c->http10 = line[7] == '0';
        c->chunked = c->close = c->keep_alive = false;
        c->length = -1;
        c->ps = P_HEADER;
        return LINE_OK;
    case P_HEADER: {
        if (len > 0) {
            char *colon = memchr(line, ':', len);
            if (colon == NULL) return LINE_BAD;
            size_t name = (size_t)(colon - line);
            char *value = colon + 1;
            while (*value == ' ' || *value == '\t') value++;
            if (header_is(line, name, "content-length")) {
                char *end;
                errno = 0;
                long long n = strtoll(value, &end, 10);
                if (end == value || n < 0 || errno != 0) return LINE_BAD;
                c->length = n;
            } else if (header_is(line, name, "transfer-encoding")) {
                c->chunked = strcasestr(value, "chunked") != NULL;
            } else if (header_is(line, name, "connection")) {
                c->close |= strcasestr(value, "close") != NULL;
                c->keep_alive |= strcasestr(value, "keep-alive") != NULL;
            }
            return LINE_OK;
        }
        if (c->status < 200 && c->status != 101) { /* an interim answer: the real one follows */
            c->ps = P_STATUS;
            return LINE_OK;
        }
        if (c->http10 && !c->keep_alive) c->close = true;
        if (opt.head || c->status == 204 || c->status == 304) return LINE_DONE;
        if (c->chunked) {
            c->ps = P_CHUNK_SIZE;
        } else if (c->length >= 0) {
            if (c->length == 0) return LINE_DONE;
            c->remaining = c->length;
            c->ps = P_BODY;
        } else {
            c->close = true;
            c->ps = P_UNTIL_EOF;
        }
        return LINE_OK;
    }
    case P_CHUNK_SIZE: {
        char *end;
        errno = 0;
        long long n = strtoll(line, &end, 16);
        if (end == line || n < 0 || errno != 0) return LINE_BAD;
        if (n == 0) {
            c->ps = P_TRAILER;
        } else {
            c->remaining = n;
            c->ps = P_CHUNK_DATA;
        }
        return LINE_OK;
    }
    case P_CHUNK_END:
        if (len != 0) return LINE_BAD;
        c->ps = P_CHUNK_SIZE;
        return LINE_OK;
    case P_TRAILER:
        return len == 0 ? LINE_DONE : LINE_OK;
    default:
        return LINE_BAD;
    }
}

/* Feeds bytes to c's parser: the bytes consumed when the response ended, -1 malformed,
 * -2 the response goes on. */
static ssize_t parse(struct conn *c, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (c->ps == P_BODY || c->ps == P_CHUNK_DATA) {
            size_t take = (size_t)c->remaining < n - i ? (size_t)c->remaining : n - i;
            i += take;
            c->remaining -= (int64_t)take;
            if (c->remaining > 0) continue;
            if (c->ps == P_BODY) return (ssize_t)i;
            c->ps = P_CHUNK_END;
            continue;
        }
        if (c->ps == P_UNTIL_EOF) return -2;
        const char *nl = memchr(p + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (p + i)) : n - i;
        size_t room = LINE_MAX_ - 1 - (size_t)c->line_len;
        memcpy(c->line + c->line_len, p + i, len < room ? len : room);
        c->line_len += (int)(len < room ? len : room);
        i += len;
        if (nl == NULL) break;
        i++;
        if (c->line_len > 0 && c->line[c->line_len - 1] == '\r') c->line_len--;
        c->line[c->line_len] = '\0';
        int r = on_line(c);
        c->line_len = 0;
        if (r == LINE_BAD) return -1;
        if (r == LINE_DONE) return (ssize_t)i;
    }
    return -2;
}

static char rbuf[65536];

static void on_readable(struct conn *c, ns_t now)
{
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n > 0) {
            ssize_t used = parse(c, rbuf, (size_t)n);
            if (used == -1) {
                fail(c, E_MALFORMED);
                return;
            }
            if (used >= 0) {
                if (used < n) c->close = true; /* bytes we never asked for: do not reuse */
                finish(c, now);
                return;
            }
            if ((size_t)n < sizeof rbuf) return; /* drained; epoll tells us when more comes */
        } else if (n == 0) {
            if (c->ps == P_UNTIL_EOF) {
                c->close = true;
                finish(c, now);
            } else {
                fail(c, E_RESET);
            }
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN) {
            return;
        } else {
            fail(c, E_RESET);
            return;
        }
    }
}

static void on_event(struct conn *c, uint32_t events, ns_t now)
{
    if (c->state == IDLE) { /* the server closed it (or spoke unasked): forget it */
        close_conn(c, false);
        return;
    }
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            fail(c, E_CONNECT);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        c->state = BUSY;
        try_write(c);
        return;
    }
    if (c->state != BUSY) return;
    if ((events & EPOLLOUT) && c->written < request_len) {
        try_write(c);
        if (c->state != BUSY) return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c, now);
}

/* ---- the loop -------------------------------------------------------------------------------- */

static int wait_events(struct epoll_event *events, int max, ns_t dt)
{
    static bool no_pwait2;
    if (dt <= SPIN_NS) return epoll_wait(epfd, events, max, 0);
    dt -= SPIN_NS; /* wake a little early and spin the rest: sleeps end late, not early */
    if (!no_pwait2) {
        struct timespec ts = {dt / NS_PER_S, dt % NS_PER_S};
        int n = epoll_pwait2(epfd, events, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS) return n;
        no_pwait2 = true;
    }
    return epoll_wait(epfd, events, max, (int)(dt / 1000000));
}

static void resolve(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "openloop: cannot resolve %s:%s: %s\n", opt.host, opt.port,
                gai_strerror(rc));
        exit(2);
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
}

static void report(void)
{
    double lag_p99 = hist_ms(&stats.lag, 0.99);
    const struct histogram *h = &stats.latency;
    printf("{\"offered_rate\": %.3f, \"pattern\": \"%s\", \"duration_s\": %.3f, "
           "\"warmup_s\": %.3f, \"connections\": %d, \"connections_opened\": %llu, "
           "\"scheduled\": %llu, \"sent\": %llu, \"unsent\": %llu, \"warmup_sent\": %llu, "
           "\"completed\": %llu, \"ok\": %llu, \"status\": {",
           opt.rate, opt.onoff ? "onoff" : "poisson", opt.duration, opt.warmup, opt.connections,
           (unsigned long long)stats.opened, (unsigned long long)stats.scheduled,
           (unsigned long long)stats.sent, (unsigned long long)stats.unsent,
           (unsigned long long)stats.warmup_sent, (unsigned long long)stats.completed,
           (unsigned long long)stats.ok);
    const char *sep = "";
    for (int s = 0; s < 600; s++) {
        if (stats.status[s] == 0) continue;
        printf("%s\"%d\": %llu", sep, s, (unsigned long long)stats.status[s]);
        sep = ", ";
    }
    uint64_t *e = stats.errors;
    printf("}, \"errors\": %llu, \"error_kinds\": {\"connect\": %llu, \"reset\": %llu, "
           "\"malformed\": %llu}, \"timeouts\": %llu, \"achieved_rate\": %.3f, "
           "\"latency_ms\": {\"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"p999\": %.4f, "
           "\"max\": %.4f, \"mean\": %.4f}, \"max_send_lag_ms\": %.4f, "
           "\"send_lag_p99_ms\": %.4f, \"generator_behind\": %s}\n",
           (unsigned long long)(e[0] + e[1] + e[2]), (unsigned long long)e[E_CONNECT],
           (unsigned long long)e[E_RESET], (unsigned long long)e[E_MALFORMED],
           (unsigned long long)stats.timeouts, (double)stats.ok_in_window / opt.duration,
           hist_ms(h, 0.5), hist_ms(h, 0.9), hist_ms(h, 0.99), hist_ms(h, 0.999),
           (double)h->max / 1e6, h->n ? h->sum / (double)h->n / 1e6 : 0.0,
           (double)stats.lag.max / 1e6, lag_p99, lag_p99 > 1.0 ? "true" : "false");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    build_request();
    resolve();
    struct rlimit fds;
    if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
        fds.rlim_cur = fds.rlim_max; /* room for --connections sockets */
        setrlimit(RLIMIT_NOFILE, &fds);
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* precise wake-ups: the default slack is 50 us */

    int n = opt.connections;
    conns = calloc((size_t)n, sizeof *conns);
    idle = calloc((size_t)n, sizeof *idle);
    free_slots = calloc((size_t)n, sizeof *free_slots);
    struct epoll_event *events = calloc((size_t)n, sizeof *events);
    if (!conns || !idle || !free_slots || !events) { perror("openloop"); return 1; }
    for (int i = 0; i < n; i++) free_slots[n_free++] = &conns[n - 1 - i];
    epfd = epoll_create1(EPOLL_CLOEXEC);
    timeout_ns = seconds(opt.timeout);

    sched.rng = opt.seed;
    sched.warming = opt.warmup > 0;
    ns_t start = now_ns();
    measure_from = start + seconds(opt.warmup);
    measure_end = measure_from + seconds(opt.duration);
    ns_t cutoff = measure_end + timeout_ns;
    ns_t next = start + seconds(next_arrival());
    bool sending = next < measure_end;

    for (;;) {
        ns_t now = now_ns();
        for (int k = 0; sending && next <= now && k < BURST; k++) {
            bool measured = next >= measure_from;
            if (measured) {
                stats.scheduled++;
                hist_add(&stats.lag, now - next); /* how late the generator got to it */
            }
            dispatch(next, measured, now);
            next = start + seconds(next_arrival());
            sending = next < measure_end;
            now = now_ns();
        }
        while (busy_head && busy_head->deadline <= now) {
            if (busy_head->measured) stats.timeouts++;
            close_conn(busy_head, true);
        }
        refill(now);
        if (!sending && ((busy_head == NULL && backlog_len == 0) || now >= cutoff)) break;
        ns_t wake = sending ? next : cutoff;
        if (busy_head && busy_head->deadline < wake) wake = busy_head->deadline;
        int got = wait_events(events, n, wake - now);
        if (got < 0 && errno != EINTR) { perror("openloop: epoll"); return 1; }
        now = now_ns();
        for (int i = 0; i < got; i++) on_event(events[i].data.ptr, events[i].events, now);
    }
    for (struct conn *c = busy_head; c; c = c->next)
        if (c->measured) stats.timeouts++; /* still unanswered at the cut-off */
    for (size_t i = 0; i < backlog_len; i++)
        if (backlog[(backlog_head + i) % backlog_cap].measured) stats.unsent++;
    free(events);
    report();
    return fflush(stdout) == 0 ? 0 : 1;
}
