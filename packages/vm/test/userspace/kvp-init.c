/*
 * /init for the KVP test (static, glibc): mounts devtmpfs (the KVP device node
 * /dev/vmbus/hv_kvp appears there), leaves a guest key in the guest pool file, starts the
 * kernel tree's hv_kvp_daemon in the foreground, then waits for the host's key to show up in
 * the external pool file, prints it and powers the VM off.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

/* The daemon's pool file record (tools/hv/hv_kvp_daemon.c: struct kvp_record). */
struct kvp_record {
  char key[512];
  char value[2048];
};

#define POOL_DIR "/var/lib/hyperv"
#define HOST_KEY "hvemu-host-key"

static int write_guest_key(void) {
  struct kvp_record r;
  memset(&r, 0, sizeof r);
  strcpy(r.key, "hvemu-guest-key");
  strcpy(r.value, "set by /init in Linux user space");
  int fd = open(POOL_DIR "/.kvp_pool_1", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  int ok = write(fd, &r, sizeof r) == (ssize_t)sizeof r;
  close(fd);
  return ok ? 0 : -1;
}

/* The host key's value from the external pool (pool 0), or 0 while it is not there. */
static int find_host_key(char *value, size_t size) {
  int fd = open(POOL_DIR "/.kvp_pool_0", O_RDONLY);
  if (fd < 0) return 0;
  struct kvp_record r;
  int found = 0;
  while (!found && read(fd, &r, sizeof r) == (ssize_t)sizeof r) {
    if (strncmp(r.key, HOST_KEY, sizeof r.key) == 0) {
      snprintf(value, size, "%.*s", (int)sizeof r.value, r.value);
      found = 1;
    }
  }
  close(fd);
  return found;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) != 0) perror("kvp-init: mount devtmpfs");
  mkdir(POOL_DIR, 0755);
  if (write_guest_key() != 0) perror("kvp-init: guest pool file");
  pid_t pid = fork();
  if (pid == 0) {
    execl("/sbin/hv_kvp_daemon", "hv_kvp_daemon", "-n", (char *)NULL);
    perror("kvp-init: exec hv_kvp_daemon");
    _exit(127);
  }
  printf("kvp-init: hv_kvp_daemon started, pid %d\n", (int)pid);
  char value[2048];
  for (int i = 0; i < 600; i++) {
    if (find_host_key(value, sizeof value)) {
      printf("kvp-init: host key %s = %s\n", HOST_KEY, value);
      tcdrain(1);
      reboot(RB_POWER_OFF);
    }
    usleep(200 * 1000);
  }
  printf("kvp-init: no host key after 120 s\n");
  tcdrain(1);
  reboot(RB_POWER_OFF);
  return 1;
}
