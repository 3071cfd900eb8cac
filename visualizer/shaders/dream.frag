#version 330

// Keyframes arrive at 1-5 per second; the picture must move at display rate.
// Both layers zoom about the centre by the same factor since the keyframe arrived,
// and `previous` is a snapshot of the screen at that moment, so zooming it further
// continues exactly the motion the viewer was watching.
uniform sampler2D keyframe;
uniform sampler2D previous;
// The keyframe arrives screen-sized (visualizer/upscale.py): fitted whole and enlarged once, not every frame.
uniform float zoom;
uniform float fade;    // 0 shows the snapshot, 1 the keyframe

// The snapshot pass turns grading off, or tint and vignette would compound per keyframe.
uniform bool graded;
uniform vec3 shadows;
uniform vec3 highlights;
uniform float tint;
uniform float vignette;
uniform float aspect;

in vec2 uv;
out vec4 f_color;

void main() {
    vec2 p = (uv - 0.5) / zoom;
    vec3 before = texture(previous, 0.5 + p).rgb;
    vec3 after = texture(keyframe, 0.5 + p).rgb;
    vec3 color = mix(before, after, fade);

    if (graded) {
        // Split toning: dark and bright parts get their own venue colour.
        float luma = dot(color, vec3(0.2126, 0.7152, 0.0722));
        color = mix(color, color * mix(shadows, highlights, luma), tint);

        // Round, not stretched to the screen: 1.0 at the corners.
        vec2 d = (uv - 0.5) * vec2(aspect, 1.0);
        float r = length(d) / length(vec2(aspect, 1.0) * 0.5);
        color *= 1.0 - vignette * smoothstep(0.35, 1.0, r);
    }
    f_color = vec4(clamp(color, 0.0, 1.0), 1.0);
}
