/*
 * kyb-shim: starts one container process and stays beside it, like conmon.
 *
 *   kyb-shim SPEC
 *
 * SPEC is a text file, one directive per line, fields separated by TAB, "\n" and "\\"
 * escaped inside fields:
 *
 *   log PATH            container output, CRI format ("<time> stdout|stderr F|P <text>")
 *   logmax BYTES FILES  rotate the log past BYTES: log -> log.1 -> ..., FILES kept in all
 *   exit PATH           written (atomically) when the container ends: "code signal time"
 *   pidfile PATH        written once started: "<shim pid> <container pid>"
 *   cgroup DIR          join DIR (its cgroup.procs) before anything else; repeatable
 *   netns PATH          join this network namespace (absent: the host's)
 *   hostname NAME
 *   root DIR            build a root file system at DIR (tmpfs) and pivot into it
 *   bind SRC DST ro|rw  bind mount SRC at DST inside the root (a file or a directory)
 *   link TARGET DST     a symbolic link DST -> TARGET inside the root (merged /usr)
 *   tmpfs DST SIZE      a tmpfs at DST inside the root ("0": no size limit)
 *   dev | proc | sys    a minimal /dev, a /proc of the new pid namespace, /sys read-only
 *   workdir PATH
 *   uid N | gid N | group N
 *   env KEY=VALUE       repeatable
 *   arg VALUE           repeatable; the first is the program (searched in PATH)
 *
 * The shim forks itself into the background (printing its pid), then forks the
 * container: that child joins the cgroups and the network namespace, unshares mount,
 * UTS, IPC and PID namespaces and forks again, so the program runs as pid 1 of its own
 * pid namespace; when it ends, the kernel kills everything it left behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXV 4096

struct bind { char *src, *dst; int ro; };
struct tmpfs { char *dst, *size; };
struct link { char *target, *dst; };

static char *log_path, *exit_path, *pid_path, *netns, *hostname, *root, *workdir;
static long long log_max = 0, log_size = 0;  /* rotate past log_max bytes (0: never) */
static int log_files = 0;                     /* files kept, the current one included */
static char *cgroups[32]; static int ncgroups;
static struct bind binds[256]; static int nbinds;
static struct tmpfs tmpfss[64]; static int ntmpfs;
static struct link links_[64]; static int nlinks;
static int want_dev, want_proc, want_sys;
static long uid = -1, gid = -1; static gid_t groups[64]; static int ngroups;
static char *envs[MAXV]; static int nenv;
static char *args[MAXV]; static int nargs;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kyb-shim: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, ": %s\n", strerror(errno));
    va_end(ap);
    _exit(127);
}

static char *unescape(char *s) {
    char *r = s, *w = s;
    while (*r) {
        if (*r == '\\' && r[1] == 'n') { *w++ = '\n'; r += 2; }
        else if (*r == '\\' && r[1] == 't') { *w++ = '\t'; r += 2; }
        else if (*r == '\\' && r[1] == '\\') { *w++ = '\\'; r += 2; }
        else *w++ = *r++;
    }
    *w = 0;
    return s;
}

static int split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    for (int i = 0; i < n; i++) unescape(f[i]);
    return n;
}

static void parse(const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) die("open %s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        if (len && line[len - 1] == '\n') line[--len] = 0;
        if (!len) continue;
        char *f[5];
        int n = split(strdup(line), f, 5);
        const char *k = f[0];
        if (!strcmp(k, "log") && n > 1) log_path = f[1];
        else if (!strcmp(k, "logmax") && n > 2) { log_max = atoll(f[1]); log_files = atoi(f[2]); }
        else if (!strcmp(k, "exit") && n > 1) exit_path = f[1];
        else if (!strcmp(k, "pidfile") && n > 1) pid_path = f[1];
        else if (!strcmp(k, "cgroup") && n > 1 && ncgroups < 32) cgroups[ncgroups++] = f[1];
        else if (!strcmp(k, "netns") && n > 1) netns = f[1];
        else if (!strcmp(k, "hostname") && n > 1) hostname = f[1];
        else if (!strcmp(k, "root") && n > 1) root = f[1];
        else if (!strcmp(k, "bind") && n > 3 && nbinds < 256)
            binds[nbinds++] = (struct bind){f[1], f[2], !strcmp(f[3], "ro")};
        else if (!strcmp(k, "link") && n > 2 && nlinks < 64)
            links_[nlinks++] = (struct link){f[1], f[2]};
        else if (!strcmp(k, "tmpfs") && n > 2 && ntmpfs < 64)
            tmpfss[ntmpfs++] = (struct tmpfs){f[1], f[2]};
        else if (!strcmp(k, "dev")) want_dev = 1;
        else if (!strcmp(k, "proc")) want_proc = 1;
        else if (!strcmp(k, "sys")) want_sys = 1;
        else if (!strcmp(k, "workdir") && n > 1) workdir = f[1];
        else if (!strcmp(k, "uid") && n > 1) uid = atol(f[1]);
        else if (!strcmp(k, "gid") && n > 1) gid = atol(f[1]);
        else if (!strcmp(k, "group") && n > 1 && ngroups < 64) groups[ngroups++] = atol(f[1]);
        else if (!strcmp(k, "env") && n > 1 && nenv < MAXV - 1) envs[nenv++] = f[1];
        else if (!strcmp(k, "arg") && n > 1 && nargs < MAXV - 1) args[nargs++] = f[1];
    }
    fclose(fp);
    envs[nenv] = NULL;
    args[nargs] = NULL;
    if (!nargs) { errno = EINVAL; die("no arg in %s", path); }
}

static void write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("open %s", path);
    if (write(fd, data, strlen(data)) < 0) die("write %s", path);
    close(fd);
}

static void write_atomic(const char *path, const char *data) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, data, strlen(data)) < 0) { close(fd); return; }
    fsync(fd);
    close(fd);
    rename(tmp, path);
}

static void mkdirs(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') { *p = 0; mkdir(buf, mode); *p = '/'; }
    }
    mkdir(buf, mode);
}

static void in_root(char *out, const char *dst) {
    snprintf(out, PATH_MAX, "%s%s%s", root, dst[0] == '/' ? "" : "/", dst);
}

static void bind_into_root(const char *src, const char *dst, int ro) {
    char target[PATH_MAX];
    in_root(target, dst);
    struct stat st;
    if (stat(src, &st) < 0) die("stat %s", src);
    if (S_ISDIR(st.st_mode)) {
        mkdirs(target, 0755);
    } else {
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", target);
        char *slash = strrchr(parent, '/');
        if (slash) { *slash = 0; mkdirs(parent, 0755); }
        int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
    }
    if (mount(src, target, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind %s on %s", src, target);
    if (ro && mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL) < 0)
        die("read-only %s", target);
}

static void setup_dev(void) {
    char dev[PATH_MAX];
    in_root(dev, "/dev");
    mkdirs(dev, 0755);
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k") < 0) die("tmpfs /dev");
    const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
    for (int i = 0; nodes[i]; i++) {
        char src[64];
        snprintf(src, sizeof src, "/dev/%s", nodes[i]);
        char dst[72];
        snprintf(dst, sizeof dst, "/dev/%s", nodes[i]);
        bind_into_root(src, dst, 0);
    }
    char p[PATH_MAX];
    in_root(p, "/dev/shm");
    mkdirs(p, 01777);
    if (mount("shm", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k") < 0)
        die("tmpfs /dev/shm");
    in_root(p, "/dev/pts");
    mkdirs(p, 0755);
    if (mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620") == 0) {
        char ptmx[PATH_MAX];
        in_root(ptmx, "/dev/ptmx");
        symlink("pts/ptmx", ptmx);
    }
    const char *links[][2] = {{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
                              {"/proc/self/fd/1", "/dev/stdout"},
                              {"/proc/self/fd/2", "/dev/stderr"}};
    for (int i = 0; i < 4; i++) {
        in_root(p, links[i][1]);
        symlink(links[i][0], p);
    }
}

static void setup_root(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    mkdirs(root, 0755);
    if (mount("rootfs", root, "tmpfs", 0, "mode=755") < 0) die("tmpfs root %s", root);
    for (int i = 0; i < nlinks; i++) {
        char l[PATH_MAX];
        in_root(l, links_[i].dst);
        if (symlink(links_[i].target, l) < 0 && errno != EEXIST) die("symlink %s", l);
    }
    /* /dev and the tmpfs mounts first: files and volumes bound below may sit inside them
       (/dev/termination-log, an emptyDir at /dev/shm or under /tmp) */
    if (want_dev) setup_dev();
    for (int i = 0; i < ntmpfs; i++) {
        char t[PATH_MAX];
        in_root(t, tmpfss[i].dst);
        mkdirs(t, 01777);
        char opts[64];
        if (strcmp(tmpfss[i].size, "0")) snprintf(opts, sizeof opts, "mode=1777,size=%s",
                                                  tmpfss[i].size);
        else snprintf(opts, sizeof opts, "mode=1777");
        if (mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) die("tmpfs %s", t);
    }
    for (int i = 0; i < nbinds; i++) {
        /* the catalog's system directories come first; volumes may then sit inside them */
        bind_into_root(binds[i].src, binds[i].dst, binds[i].ro);
    }
    char p[PATH_MAX];
    if (want_proc) {
        in_root(p, "/proc");
        mkdirs(p, 0555);
        if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("proc");
    }
    if (want_sys) {
        in_root(p, "/sys");
        mkdirs(p, 0555);
        if (mount("/sys", p, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind /sys");
        mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL);
    }
    char old[PATH_MAX];
    in_root(old, "/.oldroot");
    mkdirs(old, 0700);
    if (syscall(SYS_pivot_root, root, old) < 0) die("pivot_root %s", root);
    if (chdir("/") < 0) die("chdir /");
    if (umount2("/.oldroot", MNT_DETACH) < 0) die("umount old root");
    rmdir("/.oldroot");
}

static void run_container(int out_fd, int err_fd) {
    /* in the intermediate child: cgroups, network, new namespaces; what goes wrong here
       shows in the container's log, like a runtime's error would */
    dup2(err_fd, 2);
    for (int i = 0; i < ncgroups; i++) {
        char procs[PATH_MAX];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", cgroups[i]);
        char pid[32];
        snprintf(pid, sizeof pid, "%d", getpid());
        write_file(procs, pid);
    }
    if (netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open %s", netns);
        if (setns(fd, CLONE_NEWNET) < 0) die("setns %s", netns);
        close(fd);
    }
    int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID;
    if (unshare(flags) < 0) die("unshare");
    /* closed by the container's exec (close-on-exec), or by its death: its pid is
       reported only then, once its root and mounts are in place, so that no probe or
       exec entering its namespaces meets the host's file system */
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) {
        close(ready[1]);
        char c;
        while (read(ready[0], &c, 1) < 0 && errno == EINTR) {}
        close(ready[0]);
        /* report the container's host pid, then wait and pass its end on */
        char buf[32];
        snprintf(buf, sizeof buf, "%d\n", pid);
        if (write(3, buf, strlen(buf)) < 0) { /* the shim reads it; nothing else to do */ }
        close(3);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        if (WIFSIGNALED(status)) {
            /* exit with the signal's conventional code; the shim records the signal */
            _exit(128 + WTERMSIG(status));
        }
        _exit(WEXITSTATUS(status));
    }
    close(3);
    close(ready[0]);
    /* pid 1 of the new pid namespace */
    if (dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) die("dup2");
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) { dup2(devnull, 0); close(devnull); }
    close(out_fd);
    close(err_fd);
    if (root) setup_root();
    if (hostname && sethostname(hostname, strlen(hostname)) < 0) die("sethostname");
    if (workdir && chdir(workdir) < 0) die("chdir %s", workdir);
    if (gid >= 0) {
        if (setgroups(ngroups, groups) < 0) die("setgroups");
        if (setgid(gid) < 0) die("setgid");
    }
    if (uid >= 0 && setuid(uid) < 0) die("setuid");
    prctl(PR_SET_PDEATHSIG, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int i = 0; envs[i]; i++) putenv(envs[i]);
    execvpe(args[0], args, envs);
    die("exec %s", args[0]);
}

/* -- log copying ------------------------------------------------------------------------ */

struct stream { int fd; const char *name; char buf[65536]; size_t len; };

static int log_fd = -1;

/* log -> log.1 -> log.2 ...; the oldest beyond log_files goes. Whole lines only: we rotate
   between them, so no line is split or lost. */
static void rotate(void) {
    char from[PATH_MAX], to[PATH_MAX];
    for (int i = log_files - 1; i >= 1; i--) {
        if (i == 1) snprintf(from, sizeof from, "%s", log_path);
        else snprintf(from, sizeof from, "%s.%d", log_path, i - 1);
        snprintf(to, sizeof to, "%s.%d", log_path, i);
        rename(from, to);
    }
    if (log_files <= 1) unlink(log_path);
    close(log_fd);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
    log_size = 0;
}

static void stamp(char *out, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
}

static void emit(struct stream *s, const char *data, size_t n, int partial) {
    if (log_fd < 0) return;
    char ts[64];
    stamp(ts, sizeof ts);
    char head[128];
    int h = snprintf(head, sizeof head, "%s %s %c ", ts, s->name, partial ? 'P' : 'F');
    if (write(log_fd, head, h) < 0 || write(log_fd, data, n) < 0 || write(log_fd, "\n", 1) < 0) {
        /* the log is best effort: a full disk must not stop the container */
    }
    log_size += h + (long long)n + 1;
    if (log_max > 0 && log_size >= log_max) rotate();
}

static void drain(struct stream *s, int final) {
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->buf[i] == '\n') {
            emit(s, s->buf + start, i - start, 0);
            start = i + 1;
        }
    }
    if (start) { memmove(s->buf, s->buf + start, s->len - start); s->len -= start; }
    if (s->len == sizeof s->buf || (final && s->len)) {
        emit(s, s->buf, s->len, !final);
        s->len = 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: kyb-shim SPEC\n");
        return 2;
    }
    /* nothing of the caller's but stdin/out/err: its sockets and pipes are not ours to
       keep open (an inherited pipe would keep the caller waiting for EOF forever) */
    if (syscall(SYS_close_range, 3, ~0U, 0) < 0) {
        for (int fd = 3; fd < 1024; fd++) close(fd);
    }
    parse(argv[1]);
    /* into the background: the agent may restart; we stay with the container */
    pid_t bg = fork();
    if (bg < 0) die("fork");
    if (bg > 0) {
        printf("%d\n", bg);
        fflush(stdout);
        _exit(0);
    }
    setsid();
    /* let go of the caller's pipes: it is waiting for them to close */
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); close(devnull); }
    if (log_path) {
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        struct stat st;
        if (log_fd >= 0 && fstat(log_fd, &st) == 0) log_size = st.st_size;
    }
    int out[2], err[2], pidpipe[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe(pidpipe) < 0)
        die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(out[0]);
        close(err[0]);
        close(pidpipe[0]);
        if (pidpipe[1] != 3) { dup2(pidpipe[1], 3); close(pidpipe[1]); }
        /* the pipes must survive exec: clear close-on-exec on the write ends */
        int o = dup(out[1]), e = dup(err[1]);
        close(out[1]);
        close(err[1]);
        run_container(o, e);
    }
    close(out[1]);
    close(err[1]);
    close(pidpipe[1]);
    char buf[64] = {0};
    ssize_t got = read(pidpipe[0], buf, sizeof buf - 1);
    close(pidpipe[0]);
    long container = got > 0 ? atol(buf) : 0;
    if (pid_path) {
        char line[64];
        snprintf(line, sizeof line, "%d %ld\n", getpid(), container);
        write_atomic(pid_path, line);
    }
    struct stream streams[2] = {{out[0], "stdout", {0}, 0}, {err[0], "stderr", {0}, 0}};
    int open_streams = 2;
    while (open_streams) {
        struct pollfd pf[2];
        int n = 0;
        int idx[2];
        for (int i = 0; i < 2; i++) {
            if (streams[i].fd >= 0) { pf[n].fd = streams[i].fd; pf[n].events = POLLIN; idx[n++] = i; }
        }
        if (poll(pf, n, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int j = 0; j < n; j++) {
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            struct stream *s = &streams[idx[j]];
            ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
            if (r > 0) {
                s->len += r;
                drain(s, 0);
            } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                drain(s, 1);
                close(s->fd);
                s->fd = -1;
                open_streams--;
            }
        }
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    int sig = code > 128 ? code - 128 : 0;
    char ts[64];
    stamp(ts, sizeof ts);
    char line[128];
    snprintf(line, sizeof line, "%d %d %s\n", code, sig, ts);
    if (exit_path) write_atomic(exit_path, line);
    return 0;
}
