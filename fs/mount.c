/*
 * contactfs [-f] [-d] [-o OPTIONS] [SOURCE] MOUNTPOINT: mount the mailbox.
 *
 * The order matters: everything that can be refused (options, sign-in, the
 * cache) is checked while the terminal still sees our messages. Without -f
 * the process forks once the options are parsed and before anything is
 * opened (background() below, not fuse_daemonize): the parent waits on a
 * pipe until the child has mounted (exit 0) or given up (exit with the
 * child's status), so the child's refusals still reach the terminal. The
 * child signs in, opens the cache, mounts, and only then detaches (stdio to
 * /dev/null, chdir /) and starts threads (the sync thread, the notify
 * thread, the FUSE workers), which a fork would not carry over. Unmounting
 * (fusermount3 -u, or SIGTERM) ends the FUSE loop; the outbox gets a
 * bounded time to drain, and the process exits 0 when everything went as
 * it should.
 *
 * SOURCE is what mount.fuse3 passes from /etc/fstab's first field; it is
 * used as the file system's name in the mount table.
 */
#include "fs.h"
#include "mount_int.h"

#include "cache.h"
#include "graph.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_opt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Our options as fuse_opt sees them. Strings are malloc'd by fuse_opt. */
struct mount_args {
	char *cache_dir;
	char *vcard_version;
	int poll_s;
	int fsync_timeout_s;
	int drain_timeout_s;
	int offline;
	int followup;
	struct buf graph_spec; /* graph_url=...,user=... re-escaped for graph_options_parse */
	char *nonopt[2];       /* SOURCE and MOUNTPOINT, or MOUNTPOINT */
	int nnonopt;
	int extra_nonopt;
	int help, version;
	int shared; /* -o allow_other or allow_root: other users reach the mount */
};

enum { KEY_GRAPH, KEY_HELP, KEY_VERSION, KEY_SHARED };

#define OPT(t, p)                                    \
	{                                            \
		t, offsetof(struct mount_args, p), 1 \
	}
static const struct fuse_opt mount_opts[] = {
	OPT("cache_dir=%s", cache_dir),
	OPT("vcard_version=%s", vcard_version),
	OPT("poll=%d", poll_s),
	OPT("fsync_timeout=%d", fsync_timeout_s),
	OPT("drain_timeout=%d", drain_timeout_s),
	OPT("offline", offline),
	OPT("followup", followup),
	FUSE_OPT_KEY("graph_url=", KEY_GRAPH),
	FUSE_OPT_KEY("auth_url=", KEY_GRAPH),
	FUSE_OPT_KEY("user=", KEY_GRAPH),
	FUSE_OPT_KEY("token_cmd=", KEY_GRAPH),
	FUSE_OPT_KEY("client_id=", KEY_GRAPH),
	FUSE_OPT_KEY("tenant=", KEY_GRAPH),
	FUSE_OPT_KEY("allow_other", KEY_SHARED),
	FUSE_OPT_KEY("allow_root", KEY_SHARED),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END,
};

static int mount_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct mount_args *m = data;

	(void)outargs;
	switch (key) {
	case KEY_GRAPH:
		/* fuse_opt undid the "\," escapes: redo them for graph_options_parse. */
		if (m->graph_spec.len && buf_addch(&m->graph_spec, ','))
			return -1;
		for (const char *p = arg; *p; p++)
			if (((*p == ',' || *p == '\\') && buf_addch(&m->graph_spec, '\\')) ||
			    buf_addch(&m->graph_spec, *p))
				return -1;
		return 0;
	case KEY_HELP:
		m->help = 1;
		return 0;
	case KEY_VERSION:
		m->version = 1;
		return 0;
	case KEY_SHARED:
		m->shared = 1;
		return 1; /* libfuse's too */
	case FUSE_OPT_KEY_NONOPT:
		if (m->nnonopt < 2)
			m->nonopt[m->nnonopt++] = strdup(arg);
		else
			m->extra_nonopt = 1;
		return 0;
	default:
		return 1; /* libfuse's own: -f, -d, -s, -o allow_other, ... */
	}
}

void fs_mount_usage(FILE *f)
{
	fputs("usage: contactfs [-f] [-d] [-s] [-o OPTIONS] [SOURCE] MOUNTPOINT\n"
	      "\n"
	      "Mounts a Microsoft Graph mailbox's contacts at MOUNTPOINT: the default\n"
	      "Contacts folder is MOUNTPOINT, each contact folder a directory, each contact\n"
	      "a .vcf file. Unmount with: fusermount3 -u MOUNTPOINT\n"
	      "\n"
	      "  -f                 stay in the foreground (log to stderr, not syslog)\n"
	      "  -d                 debug: log every request (implies -f)\n"
	      "  -s                 one FUSE thread\n"
	      "  -o graph_url=URL   Graph service root (default " GRAPH_DEFAULT_URL ")\n"
	      "  -o auth_url=URL    identity platform (default " GRAPH_DEFAULT_AUTH_URL ")\n"
	      "  -o user=UPN        someone else's mailbox shared with you (default: yours)\n"
	      "  -o token_cmd=CMD   take access tokens from CMD instead of contactfs login\n"
	      "                     (ps shows CMD to every user: name a script, never a secret)\n"
	      "  -o client_id=ID    your app registration (as given to contactfs login)\n"
	      "  -o tenant=T        common, organizations, consumers or a tenant id\n"
	      "  -o cache_dir=DIR   the cache (default $XDG_CACHE_HOME/contactfs/MAILBOX)\n"
	      "  -o poll=SECONDS    how often to ask the server for changes (default 300)\n"
	      "  -o fsync_timeout=SECONDS  how long fsync waits for the server (default 30)\n"
	      "  -o drain_timeout=SECONDS  how long unmounting waits to send pending\n"
	      "                     changes (default 30; the rest go at the next mount)\n"
	      "  -o vcard_version=3.0|4.0  version of the vCards shown (default 3.0)\n"
	      "  -o offline         never talk to the server: read the cache, queue writes\n"
	      "  -o followup        show each contact's follow-up flag as\n"
	      "                     X-CONTACTFS-FOLLOWUP, read from and written to Graph's\n"
	      "                     beta (off: nothing is sent to beta)\n"
	      "  and libfuse's own mount options (allow_other, ...; see mount.fuse3(8))\n",
	      f);
}

/* Whether we can get tokens at all: a token_cmd, or a stored refresh token. */
static int signed_in(struct graph *g, const struct graph_config *cfg)
{
	struct stat st;
	char *path;
	int ok;

	if (cfg->token_cmd)
		return 1;
	path = graph_token_path(g);
	ok = path && stat(path, &st) == 0;
	free(path);
	return ok;
}

/*
 * Go to the background before anything is opened: the parent waits until
 * the child has mounted (one byte on the pipe: exit 0) or has given up (the
 * pipe closes: exit with the child's status). Until then the child's
 * messages reach the terminal the parent was started from. Returns in the
 * child with *ready set to the pipe's write end.
 */
static int background(int *ready)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid > 0) {
		char c;
		int status;
		ssize_t n;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		_exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_SOFTWARE);
	}
	close(p[0]);
	setsid();
	*ready = p[1];
	return 0;
}

/* The child is mounted: let the parent go, and leave the terminal. */
static void detach(int ready)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (chdir("/"))
		log_warn("chdir /: %s", strerror(errno));
	if (write(ready, "", 1) != 1)
		log_warn("telling the starting process we are mounted: %s", strerror(errno));
	close(ready);
}

/* A relative cache_dir made absolute (the daemon works from /). */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX];
	struct buf b;

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	buf_init(&b, PATH_MAX * 2);
	if (buf_printf(&b, "%s/%s", cwd, path)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static int parse_int_opt(const char *name, int v, int min, int def, int *out)
{
	if (v == 0) {
		*out = def;
		return 0;
	}
	if (v < min) {
		fprintf(stderr, "contactfs: -o %s must be at least %d\n", name, min);
		return -1;
	}
	*out = v;
	return 0;
}

int fs_mount_main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct mount_args m = {0};
	struct fuse_cmdline_opts cl = {0};
	struct graph_config gcfg = {0};
	struct cache_config ccfg = {0};
	struct fuse_loop_config *loop = NULL;
	struct fs fs = {0};
	struct graph *g = NULL;
	sigset_t stop_signals, old_mask;
	char *gcopy = NULL, errbuf[512], *fsname = NULL, *cache_dir = NULL;
	int r, rc = EXIT_USAGE, mounted = 0, nodes = 0, ready = -1, handlers = 0;

	/* One malloc arena for all threads. With one per thread (glibc's
	 * default, up to 8 per core), memory freed by one thread stays with
	 * its arena: a first sync of 100,000 contacts peaked at 98 MB
	 * resident against 29 MB with one arena, at the same speed
	 * (scripts/bench --big; the FUSE threads mostly wait for the cache's
	 * lock anyway). MALLOC_ARENA_MAX in the environment still wins. */
	if (!getenv("MALLOC_ARENA_MAX"))
		mallopt(M_ARENA_MAX, 1);
	buf_init(&m.graph_spec, 1 << 16);
	if (fuse_opt_parse(&args, &m, mount_opts, mount_opt_proc) == -1)
		goto out;
	if (m.help) {
		fs_mount_usage(stdout);
		rc = 0;
		goto out;
	}
	if (m.version) {
		printf("contactfs %s (libfuse %s)\n", CONTACTFS_VERSION, fuse_pkgversion());
		rc = 0;
		goto out;
	}
	if (m.extra_nonopt || m.nnonopt == 0) {
		fprintf(stderr, "contactfs: %s\n",
			m.nnonopt ? "too many arguments" : "MOUNTPOINT is required");
		fs_mount_usage(stderr);
		goto out;
	}
	/*
	 * The mount point goes back to libfuse; SOURCE names the mount. The
	 * kernel checks modes itself (default_permissions) only when other
	 * users reach the mount: without allow_other or allow_root it lets
	 * no one but us in, and the modes never refuse us anything the
	 * filesystem does not refuse itself (ops.c answers access(2)). Its own
	 * checks cost a GETATTR of the directory after every create, rename
	 * and unlink in it (docs/design.md §9).
	 */
	if (fuse_opt_add_arg(&args, m.nonopt[m.nnonopt - 1]) ||
	    fuse_opt_insert_arg(&args, 1,
				m.shared ? "-osubtype=contactfs,default_permissions"
					 : "-osubtype=contactfs"))
		goto oom;
	{
		const char *src = m.nnonopt == 2 ? m.nonopt[0] : "contactfs";
		struct buf b;

		buf_init(&b, 8192);
		/* fsname goes through fuse_opt again: escape its commas. */
		r = buf_addstr(&b, "-ofsname=");
		for (const char *p = src; !r && *p; p++)
			r = ((*p == ',' || *p == '\\') ? buf_addch(&b, '\\') : 0) ||
			    buf_addch(&b, *p);
		fsname = buf_detach(&b, NULL);
		if (r || !fsname || fuse_opt_insert_arg(&args, 1, fsname))
			goto oom;
	}
	if (fuse_parse_cmdline(&args, &cl) != 0)
		goto out;
	if (cl.show_help || cl.show_version) {
		/* fuse_parse_cmdline's own -h/-V (seen only when ours were not) */
		fs_mount_usage(stdout);
		rc = 0;
		goto out;
	}
	if (cl.debug)
		log_set_level(LOG_LVL_DEBUG);

	if (m.graph_spec.len &&
	    graph_options_parse(m.graph_spec.data, &gcfg, &gcopy, errbuf, sizeof(errbuf))) {
		fprintf(stderr, "contactfs: %s\n", errbuf);
		goto out;
	}
	if (m.cache_dir && !(cache_dir = absolute(m.cache_dir)))
		goto oom;
	fs.opt.cache_dir = cache_dir;
	fs.opt.mailbox = gcfg.user;
	fs.opt.offline = m.offline;
	fs.opt.followup = m.followup;
	fs.opt.version = VCARD_V30;
	if (m.vcard_version && !strcmp(m.vcard_version, "4.0")) {
		fs.opt.version = VCARD_V40;
	} else if (m.vcard_version && strcmp(m.vcard_version, "3.0")) {
		fprintf(stderr, "contactfs: -o vcard_version takes 3.0 or 4.0, not '%s'\n",
			m.vcard_version);
		goto out;
	}
	if (parse_int_opt("poll", m.poll_s, 1, 300, &fs.opt.poll_s) ||
	    parse_int_opt("fsync_timeout", m.fsync_timeout_s, 1, 30, &fs.opt.fsync_timeout_s) ||
	    parse_int_opt("drain_timeout", m.drain_timeout_s, 1, 30, &fs.opt.drain_timeout_s))
		goto out;

	/* libfuse checks its own options here: a typo is refused before
	 * anything is created (the session opens nothing yet). */
	fs.se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), &fs);
	if (!fs.se) {
		rc = EXIT_USAGE; /* libfuse said which option it did not know */
		goto out;
	}
	if (!cl.foreground && (r = background(&ready))) {
		fprintf(stderr, "contactfs: cannot go to the background: %s\n", strerror(-r));
		rc = EXIT_SOFTWARE;
		goto out;
	}
	g = graph_new(&gcfg, &r);
	if (!g) {
		fprintf(stderr, "contactfs: %s\n",
			r == -EINVAL ? "graph_url and auth_url must be https:// (or http:// to a "
				       "loopback address)"
				     : strerror(-r));
		rc = r == -EINVAL ? EXIT_USAGE : EXIT_SOFTWARE;
		goto out;
	}
	if (fs.opt.followup && !graph_has_beta(g)) {
		/* The flag exists in beta only; beta's root is v1.0's sibling. */
		fprintf(stderr, "contactfs: -o followup needs graph_url to end in /v1.0 (the flag "
				"is read from and written to its sibling /beta)\n");
		rc = EXIT_USAGE;
		goto out;
	}
	if (!fs.opt.offline && !signed_in(g, &gcfg)) {
		fprintf(stderr,
			"contactfs: not signed in: run 'contactfs login --client-id ID%s%s' "
			"first, or give -o token_cmd=CMD (or mount with -o offline)\n",
			gcfg.user ? " -o user=" : "", gcfg.user ? gcfg.user : "");
		rc = EXIT_NOPERM;
		goto out;
	}

	fs.uid = getuid();
	fs.gid = getgid();
	fs.timeout = 1.0;
	if ((r = fs_nodes_init(&fs)))
		goto oom;
	nodes = 1;
	ccfg.dir = fs.opt.cache_dir;
	ccfg.mailbox = gcfg.user;
	ccfg.version = fs.opt.version;
	ccfg.poll_s = fs.opt.poll_s;
	ccfg.photos = 1;
	ccfg.followup = fs.opt.followup;
	ccfg.on_change = fs_notify_change;
	ccfg.ctx = &fs;
	fs.cache = cache_open(&ccfg, fs.opt.offline ? NULL : g, errbuf, sizeof(errbuf), &r);
	if (!fs.cache) {
		fprintf(stderr, "contactfs: the cache: %s\n", errbuf[0] ? errbuf : strerror(-r));
		rc = r == -EACCES ? EXIT_NOPERM : EXIT_CANTCREAT;
		goto out;
	}

	if (fuse_set_signal_handlers(fs.se)) {
		rc = EXIT_SOFTWARE;
		goto out;
	}
	handlers = 1;
	if (fuse_session_mount(fs.se, cl.mountpoint)) {
		rc = EXIT_CANTCREAT; /* libfuse said why */
		goto out;
	}
	mounted = 1;
	if (ready >= 0) {
		log_to_syslog("contactfs");
		detach(ready);
		ready = -1;
	}

	/* From here on we are the daemon: threads may start. Ours do not take
	 * SIGTERM, SIGINT or SIGHUP: libfuse's handler only raises a flag that
	 * the FUSE threads see when the signal interrupts them, so it must land
	 * on one of them (they are made after the mask is restored). */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
	/* The sync thread's first round starts now: a directory listed
	 * within the first poll interval does not ask for another. */
	fs.asked = time(NULL);
	r = fs_notify_start(&fs);
	if (!r && !fs.opt.offline && (r = cache_start(fs.cache)))
		log_err("starting the sync thread: %s", strerror(-r));
	else if (r)
		log_err("starting the notification thread: %s", strerror(-r));
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	if (r) {
		rc = EXIT_SOFTWARE;
		goto out;
	}
	log_info("mounted %s at %s%s", gcfg.user ? gcfg.user : "your mailbox", cl.mountpoint,
		 fs.opt.offline ? " (offline)" : "");
	if (cl.singlethread) {
		r = fuse_session_loop(fs.se);
	} else {
		if (!(loop = fuse_loop_cfg_create()))
			goto oom;
		fuse_loop_cfg_set_clone_fd(loop, (unsigned)cl.clone_fd);
		fuse_loop_cfg_set_max_threads(loop, cl.max_threads);
		if (cl.max_idle_threads != UINT_MAX) /* UINT_MAX: not given */
			fuse_loop_cfg_set_idle_threads(loop, cl.max_idle_threads);
		r = fuse_session_loop_mt(fs.se, loop);
	}
	/* 0: unmounted; a signal's number: SIGTERM/SIGINT/SIGHUP asked us to go. */
	rc = r < 0 ? EXIT_SOFTWARE : 0;
	if (r < 0)
		log_err("the FUSE loop failed: %s", strerror(-r));
	fs_notify_stop(&fs);
	fuse_session_unmount(fs.se);
	mounted = 0;
	if (!fs.opt.offline) {
		r = cache_drain(fs.cache, fs.opt.drain_timeout_s * 1000);
		if (r == -ETIMEDOUT)
			log_warn("unmounted with changes still to send: they go at the next mount");
		else if (r == -EHOSTDOWN)
			log_info("unmounted offline: pending changes go at the next mount");
		else if (r)
			log_err("sending the last changes: %s", strerror(-r));
	}
	log_info("unmounted %s", cl.mountpoint);
	goto out;
oom:
	fprintf(stderr, "contactfs: out of memory\n");
	rc = EXIT_SOFTWARE;
out:
	fs_notify_stop(&fs);
	if (fs.se) {
		if (mounted)
			fuse_session_unmount(fs.se);
		/* Only once set: libfuse complains of an "unknown session". */
		if (handlers)
			fuse_remove_signal_handlers(fs.se);
	}
	cache_close(fs.cache); /* stops the sync thread: no callback after this */
	if (fs.se)
		fuse_session_destroy(fs.se);
	if (loop)
		fuse_loop_cfg_destroy(loop);
	if (nodes)
		fs_nodes_release(&fs);
	graph_free(g);
	free(gcopy);
	free(fsname);
	free(cache_dir);
	free(cl.mountpoint);
	free(m.cache_dir);
	free(m.vcard_version);
	free(m.nonopt[0]);
	free(m.nonopt[1]);
	buf_release(&m.graph_spec);
	fuse_opt_free_args(&args);
	return rc;
}
