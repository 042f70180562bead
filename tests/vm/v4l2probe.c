/* Smoke probe for tests/vm/smoke.sh (built for each guest arch as a dynamically linked glibc program):
 * lists what /dev/video0 offers and checks the webcam-style formats the daemon relies on.
 * Exit 0 when YUYV, NV12, GREY and RGB3 all take 1280x720 and one YUYV frame streams through mmap. */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <unistd.h>

static int xioctl(int fd, unsigned long req, void *arg) {
    int r;
    do r = ioctl(fd, req, arg); while (r == -1 && errno == EINTR);
    return r;
}

static const char *fcc(unsigned v, char *b) { /* b: 8 bytes; "-BE" marks big-endian variants */
    for (int i = 0; i < 4; i++) {
        char c = (char)((v >> (8 * i)) & 0x7f);
        b[i] = c >= 32 && c < 127 ? c : '?';
    }
    strcpy(b + 4, v & (1u << 31) ? "-BE" : "");
    return b;
}

int main(int argc, char **argv) {
    const char *dev = argc > 1 ? argv[1] : "/dev/video0";
    char b[16];
    int fd = open(dev, O_RDWR);
    if (fd < 0) { perror(dev); return 1; }

    struct v4l2_capability cap = {0};
    if (xioctl(fd, VIDIOC_QUERYCAP, &cap)) { perror("QUERYCAP"); return 1; }
    printf("probe: driver=%s card=%s caps=0x%08x\n", cap.driver, cap.card, cap.device_caps);

    struct v4l2_input in = {0};
    for (in.index = 0; xioctl(fd, VIDIOC_ENUMINPUT, &in) == 0; in.index++)
        printf("probe: input %u: %s (type %u)\n", in.index, in.name, in.type);
    int cur = -1;
    xioctl(fd, VIDIOC_G_INPUT, &cur);
    printf("probe: current input %d\n", cur);

    struct v4l2_fmtdesc fd_ = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    int nfmt = 0;
    printf("probe: formats:");
    for (fd_.index = 0; xioctl(fd, VIDIOC_ENUM_FMT, &fd_) == 0; fd_.index++, nfmt++)
        printf(" %s", fcc(fd_.pixelformat, b));
    printf("\nprobe: %d formats\n", nfmt);

    struct v4l2_frmsizeenum fs = {.pixel_format = V4L2_PIX_FMT_YUYV};
    printf("probe: YUYV sizes:");
    for (fs.index = 0; xioctl(fd, VIDIOC_ENUM_FRAMESIZES, &fs) == 0; fs.index++) {
        if (fs.type == V4L2_FRMSIZE_TYPE_DISCRETE) printf(" %ux%u", fs.discrete.width, fs.discrete.height);
        else { printf(" stepwise %ux%u..%ux%u", fs.stepwise.min_width, fs.stepwise.min_height, fs.stepwise.max_width, fs.stepwise.max_height); break; }
    }
    printf("\n");

    struct v4l2_control disc = {.id = 0x00f0f041};
    struct v4l2_queryctrl qc = {.id = 0x00f0f041};
    if (xioctl(fd, VIDIOC_QUERYCTRL, &qc) == 0) printf("probe: control 0x%08x '%s' type %u\n", qc.id, qc.name, qc.type);
    else printf("probe: no control 0x%08x\n", disc.id);

    int bad = 0;
    unsigned want[] = {V4L2_PIX_FMT_YUYV, V4L2_PIX_FMT_NV12, V4L2_PIX_FMT_GREY, V4L2_PIX_FMT_RGB24};
    for (unsigned i = 0; i < sizeof want / sizeof *want; i++) {
        struct v4l2_format f = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
        f.fmt.pix.width = 1280; f.fmt.pix.height = 720; f.fmt.pix.pixelformat = want[i];
        f.fmt.pix.field = V4L2_FIELD_NONE;
        int r = xioctl(fd, VIDIOC_S_FMT, &f);
        int ok = r == 0 && f.fmt.pix.width == 1280 && f.fmt.pix.height == 720 && f.fmt.pix.pixelformat == want[i];
        printf("probe: S_FMT %s 1280x720 -> %s %ux%u stride %u size %u: %s\n", fcc(want[i], b),
               fcc(f.fmt.pix.pixelformat, b + 8), f.fmt.pix.width, f.fmt.pix.height, f.fmt.pix.bytesperline,
               f.fmt.pix.sizeimage, ok ? "ok" : "MISMATCH");
        bad += !ok;
    }

    /* One YUYV frame through mmap streaming. */
    struct v4l2_format f = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    f.fmt.pix.width = 1280; f.fmt.pix.height = 720; f.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
    if (xioctl(fd, VIDIOC_S_FMT, &f)) { perror("S_FMT"); return 1; }
    struct v4l2_requestbuffers rb = {.count = 2, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
    if (xioctl(fd, VIDIOC_REQBUFS, &rb)) { perror("REQBUFS"); return 1; }
    for (unsigned i = 0; i < rb.count; i++) {
        struct v4l2_buffer vb = {.index = i, .type = rb.type, .memory = rb.memory};
        if (xioctl(fd, VIDIOC_QUERYBUF, &vb) || mmap(0, vb.length, PROT_READ, MAP_SHARED, fd, vb.m.offset) == MAP_FAILED ||
            xioctl(fd, VIDIOC_QBUF, &vb)) { perror("QUERYBUF/mmap/QBUF"); return 1; }
    }
    int t = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl(fd, VIDIOC_STREAMON, &t)) { perror("STREAMON"); return 1; }
    fd_set s; FD_ZERO(&s); FD_SET(fd, &s);
    struct timeval tv = {.tv_sec = 10};
    if (select(fd + 1, &s, 0, 0, &tv) <= 0) { fprintf(stderr, "probe: no frame in 10 s\n"); return 1; }
    struct v4l2_buffer vb = {.type = t, .memory = V4L2_MEMORY_MMAP};
    if (xioctl(fd, VIDIOC_DQBUF, &vb)) { perror("DQBUF"); return 1; }
    printf("probe: frame seq %u bytesused %u (sizeimage %u)\n", vb.sequence, vb.bytesused, f.fmt.pix.sizeimage);
    bad += vb.bytesused != f.fmt.pix.sizeimage;
    xioctl(fd, VIDIOC_STREAMOFF, &t);
    close(fd);
    printf("probe: %s\n", bad ? "FAIL" : "OK");
    return bad ? 1 : 0;
}
